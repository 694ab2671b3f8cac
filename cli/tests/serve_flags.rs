//! `berth serve --default-image` / `BERTH_DEFAULT_IMAGE`: one image for the control
//! plane's creates that name none and for the local docker worker; `--key-rate-limit`
//! and `--key-rate-burst` beside the config file's `api` section.

use std::process::Command;

use berth_cli::serve_config::ServeConfig;

#[test]
fn the_default_image_reaches_the_control_plane_and_the_local_worker() {
    let mut config = ServeConfig::from_yaml(
        "local_worker:\n  provider: docker\n  docker:\n    default_image: a:1\n",
    )
    .unwrap();
    config.set_default_image("berth-test-busybox:latest");
    config.validate().unwrap();
    assert_eq!(
        config.control_plane.sandboxes.default_image,
        "berth-test-busybox:latest"
    );
    assert_eq!(
        config.local_worker.docker.default_image,
        "berth-test-busybox:latest"
    );
}

#[test]
fn serve_takes_the_flag_and_its_variable() {
    let help = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--default-image"), "{help}");
    assert!(help.contains("BERTH_DEFAULT_IMAGE"), "{help}");
    for flag in [
        "--key-rate-limit",
        "BERTH_KEY_RATE_LIMIT",
        "--key-rate-burst",
        "BERTH_KEY_RATE_BURST",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

#[test]
fn the_config_file_takes_key_rate_limits() {
    let config =
        ServeConfig::from_yaml("api:\n  key_rate_limit: 50\n  key_rate_burst: 100\n").unwrap();
    config.validate().unwrap();
    assert_eq!(config.control_plane.api.key_rate_limit, 50);
    assert_eq!(config.control_plane.api.key_rate_burst, 100);
    assert_eq!(
        ServeConfig::from_yaml("")
            .unwrap()
            .control_plane
            .api
            .key_rate_limit,
        0,
        "off by default"
    );
}
