//! `weir validate` as users and scripts run it: the real binary, real files,
//! exit codes and output lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(repo()).output().expect("run weir")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn shipped_examples_are_valid() {
    let o = weir(&["validate", "examples"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.ends_with("valid, 0 invalid, 0 warnings"), "{out}");
    assert!(!summary.starts_with("0 objects"), "{out}");
}

#[test]
fn invalid_objects_exit_1_with_located_findings() {
    let file = "crates/weir/tests/testdata/broken-reviews.yaml";
    let o = weir(&["validate", file]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    for want in [
        format!("{file}:14: VirtualService default/broken-reviews: spec.http[0].route[0].weight: weight -1 < 0"),
        format!(
            "{file}:15: VirtualService default/broken-reviews: spec.http[0].timeout: duration must be greater than 1ms"
        ),
        "\"sometimes\" is not a valid retryOn policy".to_string(),
        "HTTP route cannot contain both route and redirect".to_string(),
        "200 is not a valid redirect code, must be 3xx".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert!(out.lines().last().unwrap_or_default().starts_with("1 objects: 0 valid, 1 invalid"), "{out}");
}

#[test]
fn json_output_carries_the_same_data() {
    let o = weir(&["validate", "-o", "json", "crates/weir/tests/testdata/broken-reviews.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["summary"]["invalid"], 1);
    let f = &v["findings"][0];
    for key in ["severity", "file", "line", "kind", "namespace", "name", "path", "message"] {
        assert!(f.get(key).is_some(), "finding lacks {key}: {f}");
    }
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let dir = tempdir("unknown");
    let f = dir.join("dr.yaml");
    std::fs::write(
        &f,
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: r\n  namespace: shop\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    lables: {version: v1}\n",
    )
    .expect("write");
    let o = weir(&["validate", f.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains(":10: DestinationRule shop/r: spec.subsets[0].lables: unknown field \"lables\""), "{out}");
}

#[test]
fn unreadable_or_unparsable_input_exits_2_with_file_and_line() {
    let o = weir(&["validate", "no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/file.yaml"), "{}", stderr(&o));

    let dir = tempdir("syntax");
    let f = dir.join("bad.yaml");
    std::fs::write(&f, "apiVersion: networking.istio.io/v1\nkind: Gateway\nspec:\n  servers: [\n").expect("write");
    let o = weir(&["validate", f.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:", f.display())) && err.contains("invalid YAML"), "{err}");

    let o = weir(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn stdin_and_other_kinds() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: DNS\n",
        )
        .expect("write stdin");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("notice: <stdin>:1: skipping apps/v1 Deployment default/web"), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 objects: 1 valid, 0 invalid"), "{}", stdout(&o));
}

#[test]
fn istio_samples_validate_whole() {
    let samples = repo().join("../shared/spec/samples");
    if !samples.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "../shared/spec/samples is missing");
        return;
    }
    let o = weir(&["validate", "--quiet", samples.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 invalid"), "{}", stdout(&o));
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

#[test]
fn proxy_config_prints_istio_style_tables_and_json() {
    let o = weir(&["proxy-config", "routes", "--config", "examples/bookinfo"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("http.8080") && l.contains("/productpage") && l.contains("default/bookinfo")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("9080") && l.contains("reviews.default.svc.cluster.local:9080")),
        "{out}"
    );

    let o = weir(&["proxy-config", "clusters", "--config", "examples/bookinfo", "--role", "sidecar", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let names: Vec<&str> = v.as_array().expect("array").iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(names.contains(&"outbound|9080|v2|reviews.default.svc.cluster.local"), "{names:?}");

    let o = weir(&["proxy-config", "listeners", "--config", "examples/bookinfo", "-o", "yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("route_table: http.8080"), "{}", stdout(&o));
}

#[test]
fn explain_routes_by_header_and_says_why_not() {
    let o =
        weir(&["explain", "--config", "examples/bookinfo", "-H", "end-user: jason", "http://reviews:9080/reviews/0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("outbound|9080|v2|reviews.default.svc.cluster.local"), "{out}");
    assert!(out.contains("VirtualService default/reviews http[0] match 0, examples/bookinfo/reviews.yaml:"), "{out}");

    let o = weir(&["explain", "--config", "examples/bookinfo", "http://localhost:8080/nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("no route matched -> 404 NR"), "{out}");
    assert!(out.contains("closest:"), "{out}");

    let o = weir(&["explain", "--config", "examples/bookinfo", "http://localhost:1234/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("no listener on port 1234"), "{}", stdout(&o));
}

#[test]
fn analyze_reports_istio_codes() {
    let dir = tempdir("analyze");
    std::fs::write(
        dir.join("cfg.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v9}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ghost, namespace: default}\nspec:\n  host: ghost\n",
    )
    .expect("write");
    let o = weir(&["analyze", dir.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("Error [IST0101] (VirtualService default/r) Referenced host not found"), "{out}");
    assert!(out.contains("Warning [IST0174] (DestinationRule default/ghost)"), "{out}");

    let o = weir(&["analyze", "examples"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("No validation issues found"), "{}", stdout(&o));
}
