//! The OpenAPI description stays true: the committed file is the one the handlers generate,
//! and the intake schema names exactly the fields `import` takes.

use super::*;

#[test]
fn docs_openapi_json_is_what_the_handlers_generate() {
    let committed = include_str!("../../docs/openapi.json");
    assert!(
        committed == openapi_json(),
        "docs/openapi.json is out of date with the handlers: run \
         `cargo run -- generate-assets target/assets && cp target/assets/openapi.json docs/`"
    );
}

#[test]
fn every_route_is_described_with_its_method() {
    let doc = openapi();
    let described: Vec<(String, Vec<String>)> = doc
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let value = serde_json::to_value(item).unwrap();
            let methods = value
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect();
    let expected = [
        ("/v1/payments", vec!["get", "post"]),
        ("/v1/payments/{id}", vec!["get"]),
        ("/v1/payments/{id}/check", vec!["post"]),
        (
            "/v1/accounts/{account}/payments/{out_trade_no}",
            vec!["get"],
        ),
        ("/v1/discrepancies", vec!["get"]),
        ("/v1/discrepancies/{id}/resolve", vec!["post"]),
        ("/notify/qfpay/{account}", vec!["post"]),
        ("/notify/ecpay/{account}", vec!["post"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/metrics", vec!["get"]),
    ];
    assert_eq!(described.len(), expected.len(), "{described:?}");
    for (path, methods) in expected {
        let found = described
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} is not described: {described:?}"));
        let mut got = found.1.clone();
        got.sort();
        assert_eq!(got, methods, "{path}");
    }
    // `/v1` needs the token; the others do not.
    let json = serde_json::to_value(&doc).unwrap();
    for (path, item) in json["paths"].as_object().unwrap() {
        for (_, op) in item.as_object().unwrap() {
            let secured = op.get("security").is_some();
            assert_eq!(secured, path.starts_with("/v1"), "{path}");
        }
    }
}

#[test]
fn the_intake_schema_names_the_import_fields() {
    let json = serde_json::to_value(openapi()).unwrap();
    let props = json["components"]["schemas"]["IntakeRecord"]["properties"]
        .as_object()
        .expect("IntakeRecord schema");
    let mut described: Vec<&str> = props.keys().map(String::as_str).collect();
    described.sort();
    let mut fields = crate::intake::FIELDS.to_vec();
    fields.sort();
    assert_eq!(described, fields);
}
