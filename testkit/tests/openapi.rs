//! The OpenAPI description at `/api/v1/openapi.json`: served without a key, naming
//! every route the router serves (read from the same route table), pointing errors at
//! the error body, and describing real answers truly.

use serde_json::{Value, json};

use berth_testkit::{TestFleet, id_of};

async fn fetch_description(fleet: &TestFleet) -> Value {
    let url = format!("{}/api/v1/openapi.json", fleet.cp.api_url());
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "no key is needed");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// Follows a `$ref` to `#/components/...`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference}"));
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "null" => value.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// Checks `value` against `schema`: types, required and known properties, enums, maps,
/// arrays and oneOf; enough for the shapes this API answers with.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|option| check(doc, option, value, at).is_ok())
            .count();
        return match matching {
            1 => Ok(()),
            n => Err(format!("{at}: {n} oneOf options match {value}")),
        };
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_matches(name, value) => {
            return Err(format!("{at}: {value} is not {name}"));
        }
        Some(Value::Array(names))
            if !names
                .iter()
                .any(|name| type_matches(name.as_str().unwrap(), value)) =>
        {
            return Err(format!("{at}: {value} is none of {names:?}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: {name} is required in {value}"));
            }
        }
        for (name, field) in object {
            let field_at = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => check(doc, property, field, &field_at)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{field_at} is not in the schema"));
                }
                (None, Some(extra @ Value::Object(_))) => check(doc, extra, field, &field_at)?,
                (None, _) if properties.is_some() => {
                    return Err(format!("{field_at} is not described"));
                }
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

/// The schema of `method path`'s answer with `status` in `content_type`.
fn response_schema<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    status: u16,
    content_type: &str,
) -> &'a Value {
    let responses = &doc["paths"][path][method]["responses"];
    let response = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{method} {path} documents no {status}"));
    let response = resolve(doc, response);
    response["content"][content_type]
        .get("schema")
        .unwrap_or_else(|| panic!("{method} {path} {status}: no {content_type} schema"))
}

fn conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let schema = response_schema(doc, method, path, status, "application/json");
    if let Err(mismatch) = check(doc, schema, body, "$") {
        panic!("{method} {path} {status}: {mismatch}");
    }
}

#[tokio::test]
async fn every_route_is_described_and_errors_point_at_the_error_body() {
    let fleet = TestFleet::builder().workers(1).start().await;
    let doc = fetch_description(&fleet).await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "OpenAPI 3.x, not {version}");

    let paths = doc["paths"].as_object().unwrap();
    let routes = berth_controlplane::api::route_list();
    assert!(routes.len() >= 35, "the route table has {}", routes.len());
    let mut described = 0;
    for (method, path) in &routes {
        let method = method.as_str().to_lowercase();
        let operation = paths
            .get(*path)
            .and_then(|item| item.get(&method))
            .unwrap_or_else(|| panic!("{method} {path} is served but not described"));
        let responses = operation["responses"].as_object().unwrap();
        // (a WebSocket's success is its upgrade)
        assert!(
            responses
                .keys()
                .any(|status| status.starts_with('2') || status == "101"),
            "{method} {path}: no success answer"
        );
        for status in ["500", "default"] {
            let schema = response_schema(
                &doc,
                &method,
                path,
                status.parse().unwrap_or(599),
                "application/json",
            );
            assert_eq!(
                schema["$ref"], "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
        }
        let keyed = operation
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|schemes| !schemes.is_empty());
        if keyed {
            for status in ["401", "403"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: no {status}"
                );
            }
        }
        // every 4xx/5xx answer is the error body
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &resolve(&doc, response)["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        described += 1;
    }
    // and nothing is described that is not served
    let operations: usize = paths
        .values()
        .map(|item| {
            ["get", "post", "put", "delete", "patch", "head", "options"]
                .iter()
                .filter(|method| item.get(**method).is_some())
                .count()
        })
        .sum();
    assert_eq!(
        operations, described,
        "described operations that are not served"
    );

    // the public routes take no key; the rest name the key schemes
    for (path, method) in [
        ("/api/v1/health", "get"),
        ("/metrics", "get"),
        ("/api/v1/openapi.json", "get"),
    ] {
        let security = doc["paths"][path][method].get("security");
        assert!(
            security.is_none_or(|s| s.as_array().unwrap().is_empty()),
            "{path}"
        );
    }
    assert!(
        !doc["paths"]["/api/v1/sandboxes"]["post"]["security"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");

    // the streams and downloads say what they are
    let exec = &doc["paths"]["/api/v1/sandboxes/{id}/exec"]["post"]["responses"]["200"]["content"];
    assert!(exec.get("application/x-ndjson").is_some(), "{exec}");
    let read = &doc["paths"]["/api/v1/sandboxes/{id}/files"]["get"]["responses"]["200"]["content"];
    assert!(read.get("application/octet-stream").is_some(), "{read}");
    fleet.stop().await;
}

#[tokio::test]
async fn real_answers_match_their_schemas() {
    let fleet = TestFleet::builder().workers(1).start().await;
    let doc = fetch_description(&fleet).await;
    let api = &fleet.api;

    let (status, body) = api
        .post("/sandboxes", json!({"provider": "mock", "ttl": "10m"}))
        .await;
    assert_eq!(status, 201, "{body}");
    conforms(&doc, "post", "/api/v1/sandboxes", 201, &body);
    let id = id_of(&body);

    let (status, body) = api.get(&format!("/sandboxes/{id}")).await;
    conforms(&doc, "get", "/api/v1/sandboxes/{id}", status, &body);
    let (status, body) = api.get("/sandboxes").await;
    conforms(&doc, "get", "/api/v1/sandboxes", status, &body);
    let (status, body) = api.exec(&id, json!({"command": "echo hi"})).await;
    assert_eq!(status, 200, "{body}");
    conforms(&doc, "post", "/api/v1/sandboxes/{id}/exec", status, &body);
    let (status, body) = api.get("/workers").await;
    conforms(&doc, "get", "/api/v1/workers", status, &body);
    let (status, body) = api.get("/status").await;
    conforms(&doc, "get", "/api/v1/status", status, &body);
    let (status, body) = api
        .post("/keys", json!({"scopes": ["read"], "expires": "1h"}))
        .await;
    assert_eq!(status, 201, "{body}");
    conforms(&doc, "post", "/api/v1/keys", status, &body);
    let key_id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = api.get("/keys").await;
    conforms(&doc, "get", "/api/v1/keys", status, &body);
    let (status, body) = api.delete(&format!("/keys/{key_id}")).await;
    conforms(&doc, "delete", "/api/v1/keys/{id}", status, &body);
    let (status, body) = api.get("/health").await;
    conforms(&doc, "get", "/api/v1/health", status, &body);
    let (status, body) = api
        .post(
            "/templates",
            json!({"name": "web", "env": {"A": "b"}, "on_start": "true"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    conforms(&doc, "post", "/api/v1/templates", status, &body);
    let (status, body) = api.get("/templates").await;
    conforms(&doc, "get", "/api/v1/templates", status, &body);
    let (status, body) = api.post("/templates/web/spawn", json!({})).await;
    assert_eq!(status, 201, "{body}");
    conforms(
        &doc,
        "post",
        "/api/v1/templates/{name}/spawn",
        status,
        &body,
    );
    let (status, body) = api.post("/sandboxes/admission", json!({})).await;
    conforms(&doc, "post", "/api/v1/sandboxes/admission", status, &body);
    let (status, body) = api
        .post(
            &format!("/sandboxes/{id}/files"),
            json!({"path": "/a.txt", "content": "x"}),
        )
        .await;
    conforms(&doc, "post", "/api/v1/sandboxes/{id}/files", status, &body);
    let (status, body) = api
        .get(&format!("/sandboxes/{id}/files/stat?path=/a.txt"))
        .await;
    conforms(
        &doc,
        "get",
        "/api/v1/sandboxes/{id}/files/stat",
        status,
        &body,
    );

    // each streamed line is an exec stream line
    let response = api
        .request(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo out; echo err >&2; exit 3", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let line_schema = response_schema(
        &doc,
        "post",
        "/api/v1/sandboxes/{id}/exec",
        200,
        "application/x-ndjson",
    );
    for line in text.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        check(&doc, line_schema, &line, "$").unwrap_or_else(|err| panic!("{err}"));
    }
    assert!(text.contains(r#""exit_code":3"#), "{text}");

    // errors: an unknown sandbox, a bad body, no key
    let (status, body) = api.get("/sandboxes/nope").await;
    assert_eq!(status, 404);
    conforms(&doc, "get", "/api/v1/sandboxes/{id}", status, &body);
    assert!(body["request_id"].is_string(), "{body}");
    let (status, body) = api.post("/sandboxes", json!({"memory_mb": "lots"})).await;
    assert_eq!(status, 400);
    conforms(&doc, "post", "/api/v1/sandboxes", status, &body);
    let response = reqwest::get(format!("{}/sandboxes", api.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    conforms(&doc, "get", "/api/v1/sandboxes", 401, &body);
    fleet.stop().await;
}
