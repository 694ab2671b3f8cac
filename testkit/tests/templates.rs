//! Templates (`/api/v1/templates`): saving versions only on a change of content,
//! spawning from one (its image, limits, env and on_start, with the request's
//! overrides), the refusals (an unknown template is a 400 on create and a 404 by
//! name; a failing on_start leaves the sandbox in `error`), and one team's templates
//! unseen by another. Each spawn case runs on a listening and a dial-out worker.

use serde_json::{Value, json};

use berth_testkit::{TestFleet, id_of};

async fn fleet(dial_out: bool) -> TestFleet {
    TestFleet::builder()
        .workers(1)
        .worker(move |config| {
            if dial_out {
                config.listen = None;
            }
        })
        .start()
        .await
}

async fn put(fleet: &TestFleet, name: &str, document: Value) -> (u16, Value) {
    let api = &fleet.api;
    api.send(
        api.request(reqwest::Method::PUT, &format!("/templates/{name}"))
            .json(&document),
    )
    .await
}

#[tokio::test]
async fn versions_move_only_when_the_content_does() {
    let fleet = fleet(false).await;
    let api = &fleet.api;
    let document = json!({"name": "py", "image": "python:3.12", "memory_mb": 256, "vcpus": 1,
                          "ttl": "20m", "provider": "", "metadata": {"team": "ml"}});
    let (status, made) = api.post("/templates", document.clone()).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (made["name"].as_str(), made["version"].as_i64()),
        (Some("py"), Some(1))
    );
    assert_eq!(made["image"], "python:3.12");
    assert_eq!(made["metadata"]["team"], "ml");
    let hash = made["content_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "{made}");

    // the same content again: 200, nothing changes
    let (status, again) = api.post("/templates", document.clone()).await;
    assert_eq!(
        (status, again["version"].as_i64()),
        (200, Some(1)),
        "{again}"
    );
    assert_eq!(again["content_hash"], hash.as_str());

    // a change: version 2, a new hash
    let mut changed = document.clone();
    changed["env"] = json!({"GREETING": "hello"});
    let (status, updated) = api.post("/templates", changed).await;
    assert_eq!(
        (status, updated["version"].as_i64()),
        (200, Some(2)),
        "{updated}"
    );
    assert_ne!(updated["content_hash"], hash.as_str());

    // YAML with a YAML content type, under the URL's name (a Podfile names none)
    let (status, podfile) = api
        .send(
            api.request(reqwest::Method::PUT, "/templates/pod")
                .header("content-type", "application/yaml")
                .body("base: alpine:3.20\nenv:\n  PORT: 8080\non_start: |\n  echo ready\n"),
        )
        .await;
    assert_eq!(status, 201, "{podfile}");
    assert_eq!(
        (&podfile["name"], &podfile["image"], &podfile["env"]["PORT"]),
        (&json!("pod"), &json!("alpine:3.20"), &json!("8080"))
    );

    let (status, listed) = api.get("/templates").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pod", "py"]);
    let (status, got) = api.get("/templates/py").await;
    assert_eq!((status, got["version"].as_i64()), (200, Some(2)), "{got}");

    // refusals: what is wrong is named
    let (status, err) = api
        .post(
            "/templates",
            json!({"name": "x", "packages": ["git; reboot"]}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("package"),
        "{err}"
    );
    let (status, err) = api
        .post(
            "/templates",
            json!({"name": "x", "services": [{"name": "db"}]}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("missing field `image`"),
        "{err}"
    );
    let (status, err) = api
        .post("/templates", json!({"name": "x", "memory_mb": 1}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("memory_mb"),
        "{err}"
    );
    let (status, _) = api.post("/templates", json!({"image": "alpine"})).await;
    assert_eq!(status, 400);

    // each save is in the audit log with what it did
    let (status, audit) = api.get("/audit?limit=100").await;
    assert_eq!(status, 200, "{audit}");
    let details: Vec<String> = audit["records"]
        .as_array()
        .or(audit.as_array())
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["operation"], r["detail"]))
        .collect();
    for needle in [
        "template=py version=1 created",
        "template=py version=1 unchanged",
        "template=py version=2 updated",
    ] {
        assert!(
            details.iter().any(|d| d.contains(needle)),
            "{needle}: {details:?}"
        );
    }

    let (status, deleted) = api.delete("/templates/py").await;
    assert_eq!((status, &deleted["status"]), (200, &json!("deleted")));
    let (status, err) = api.get("/templates/py").await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{err}"
    );
    let (status, _) = api.delete("/templates/py").await;
    assert_eq!(status, 404);
}

async fn spawns_from_a_template(dial_out: bool) {
    let fleet = fleet(dial_out).await;
    let api = &fleet.api;
    let (status, saved) = put(
        &fleet,
        "web",
        json!({"image": "alpine:3.20", "memory_mb": 256, "ttl": "15m",
               "metadata": {"stack": "web", "tier": "dev"},
               "env": {"GREETING": "hello from the template", "PORT": 8080},
               "on_start": "mkdir -p /workspace/app && echo started > /workspace/app/on_start.txt"}),
    )
    .await;
    assert_eq!(status, 201, "{saved}");

    // a create naming it takes its fields where the request is silent
    let sandbox = api
        .create_sandbox(json!({"template": "web", "metadata": {"tier": "test"}}))
        .await;
    assert_eq!(sandbox["image"], "alpine:3.20", "{sandbox}");
    assert_eq!(sandbox["memory_mb"], 256);
    assert_eq!(sandbox["template"], "web");
    assert_eq!(sandbox["metadata"], json!({"stack": "web", "tier": "test"}));
    let id = id_of(&sandbox);
    let (status, out) = api
        .exec(
            &id,
            json!({"command": "echo $GREETING on $PORT; cat /workspace/app/on_start.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["stdout"], "hello from the template on 8080\nstarted\n",
        "{out}"
    );
    // an exec's own env still wins
    let (_, out) = api
        .exec(
            &id,
            json!({"command": "echo $GREETING", "env": {"GREETING": "mine"}}),
        )
        .await;
    assert_eq!(out["stdout"], "mine\n", "{out}");

    // the request's limits override the template's; StacyVM's SDK always sends the
    // default image, which stands for the template's
    let sandbox = api
        .create_sandbox(json!({"template": "web", "image": "alpine:latest", "memory_mb": 128}))
        .await;
    assert_eq!(
        (&sandbox["image"], &sandbox["memory_mb"]),
        (&json!("alpine:3.20"), &json!(128))
    );
    let (status, err) = api
        .post(
            "/sandboxes",
            json!({"template": "web", "image": "debian:12"}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("sets image"),
        "{err}"
    );

    // the spawn route, as StacyVM's spawn_template calls it (no body)
    let (status, spawned) = api
        .send(api.request(reqwest::Method::POST, "/templates/web/spawn"))
        .await;
    assert_eq!(status, 201, "{spawned}");
    assert_eq!(
        (&spawned["template"], &spawned["state"]),
        (&json!("web"), &json!("running"))
    );

    // an unknown template: 400 on create (nothing made), 404 by name
    let before = api.get("/sandboxes").await.1.as_array().unwrap().len();
    let (status, err) = api.post("/sandboxes", json!({"template": "nope"})).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("BAD_REQUEST")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("\"nope\""),
        "{err}"
    );
    let (status, _) = api.post("/templates/nope/spawn", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        api.get("/sandboxes").await.1.as_array().unwrap().len(),
        before
    );

    // a failing on_start fails the create: the sandbox is left in error with why
    let (status, _) = put(
        &fleet,
        "broken",
        json!({"on_start": "echo starting; echo the database is missing >&2; exit 3"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, err) = api.post("/sandboxes", json!({"template": "broken"})).await;
    assert_eq!(status, 400, "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("on_start exited with 3") && message.contains("the database is missing"),
        "{err}"
    );
    let failed = err["sandbox_id"].as_str().expect("the failed sandbox's id");
    let (_, view) = api.get(&format!("/sandboxes/{failed}")).await;
    assert_eq!(view["state"], "error", "{view}");
    assert!(
        view["error"]
            .as_str()
            .unwrap()
            .contains("on_start exited with 3"),
        "{view}"
    );
}

#[tokio::test]
async fn spawns_from_a_template_on_a_listening_worker() {
    spawns_from_a_template(false).await;
}

#[tokio::test]
async fn spawns_from_a_template_on_a_dial_out_worker() {
    spawns_from_a_template(true).await;
}

#[tokio::test]
async fn a_team_sees_only_its_own_templates() {
    let fleet = fleet(false).await;
    let api = &fleet.api;
    api.create_team("red", json!({})).await;
    api.create_team("blue", json!({})).await;
    let red = api.with_key(&api.team_key("red", &["read", "write", "exec"]).await);
    let blue = api.with_key(&api.team_key("blue", &["read", "write", "exec"]).await);
    let (status, _) = red
        .post(
            "/templates",
            json!({"name": "shared-name", "env": {"WHO": "red"}}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = blue
        .post(
            "/templates",
            json!({"name": "shared-name", "env": {"WHO": "blue"}}),
        )
        .await;
    // one name, two teams: each its own version 1
    assert_eq!(status, 201);
    let (status, _) = red.post("/templates", json!({"name": "red-only"})).await;
    assert_eq!(status, 201);

    let (_, listed) = blue.get("/templates").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(blue.get("/templates/red-only").await.0, 404);
    assert_eq!(blue.delete("/templates/red-only").await.0, 404);
    let (status, _) = blue
        .post("/sandboxes", json!({"template": "red-only"}))
        .await;
    assert_eq!(status, 400);
    let sandbox = blue
        .create_sandbox(json!({"template": "shared-name"}))
        .await;
    let (_, out) = blue
        .exec(&id_of(&sandbox), json!({"command": "echo $WHO"}))
        .await;
    assert_eq!(out["stdout"], "blue\n", "{out}");

    // a read-only key reads templates and cannot save them
    let reader = api.with_key(&api.team_key("red", &["read"]).await);
    assert_eq!(reader.get("/templates/red-only").await.0, 200);
    assert_eq!(reader.post("/templates", json!({"name": "z"})).await.0, 403);
    // deleting the team removes its templates
    assert_eq!(
        blue.delete(&format!("/sandboxes/{}", id_of(&sandbox)))
            .await
            .0,
        200
    );
    let (status, answer) = api.delete("/teams/blue").await;
    assert_eq!(status, 200, "{answer}");
    api.create_team("blue", json!({})).await;
    let blue = api.with_key(&api.team_key("blue", &["read"]).await);
    assert_eq!(blue.get("/templates").await.1, json!([]));
}

/// A template's `workdir` is made at create and is where on_start, execs and sessions
/// start when they name no directory (a relative one is taken from it); its `shell` is
/// shown for the CLI's and the SSH gateway's login shells; its `ports` are listed with
/// the sandbox's ports.
#[tokio::test]
async fn a_templates_workdir_is_where_commands_start() {
    let fleet = fleet(false).await;
    let api = &fleet.api;
    let (status, body) = put(
        &fleet,
        "api",
        json!({"workdir": "/workspace/api", "shell": "bash", "ports": [8080, 3000],
               "on_start": "echo started > here.txt"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sandbox = api.create_sandbox(json!({"template": "api"})).await;
    assert_eq!(
        (sandbox["workdir"].as_str(), sandbox["shell"].as_str()),
        (Some("/workspace/api"), Some("bash")),
        "{sandbox}"
    );
    assert_eq!(sandbox["ports"], json!([8080, 3000]), "{sandbox}");
    let id = id_of(&sandbox);
    // the declared ports are listed with their preview state
    let (status, ports) = api.get(&format!("/sandboxes/{id}/ports")).await;
    assert_eq!(status, 200, "{ports}");
    let declared: Vec<(u64, bool)> = ports["declared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), p["public"].as_bool().unwrap()))
        .collect();
    assert_eq!(declared, [(8080, false), (3000, false)], "{ports}");
    let (status, out) = api
        .exec(&id, json!({"command": "pwd && cat here.txt"}))
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("/workspace/api\nstarted\n")),
        "on_start and the exec ran in the workdir: {out}"
    );
    let (status, _) = api.exec(&id, json!({"command": "mkdir -p sub/dir"})).await;
    assert_eq!(status, 200);
    let (status, out) = api
        .exec(&id, json!({"command": "pwd", "workdir": "sub/dir"}))
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("/workspace/api/sub/dir\n")),
        "{out}"
    );
    let (status, out) = api
        .exec(&id, json!({"command": "pwd", "workdir": "/tmp"}))
        .await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("/tmp\n")),
        "{out}"
    );
    // a sandbox of no template starts where it always did
    let plain = api.create_sandbox(json!({})).await;
    assert!(plain.get("workdir").is_none(), "{plain}");
    let (_, out) = api.exec(&id_of(&plain), json!({"command": "pwd"})).await;
    assert_eq!(out["stdout"], "/workspace\n");
    // refused: a relative workdir, a shell with syntax
    for (document, needle) in [
        (json!({"workdir": "api"}), "absolute path"),
        (json!({"shell": "bash; id"}), "shell"),
    ] {
        let (status, err) = put(&fleet, "bad", document).await;
        assert_eq!(status, 400, "{err}");
        assert!(err["message"].as_str().unwrap().contains(needle), "{err}");
    }
}
