//! Reads Istio configuration from files, directories and stdin: multi-document
//! YAML, JSON and `kind: List`, with the line of every field kept for messages.
//!
//! A file that cannot be read or parsed is a [`LoadError`] (the whole file is
//! unusable). A document that parses but does not decode (unknown field,
//! wrong type) is a [`DecodeProblem`] on that one object; the rest still load.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::types::{
    FieldLines, IstioObject, Kind, NETWORKING_GROUP, NETWORKING_VERSIONS, ObjectMeta, Origin, OtherObject, Spec,
};

mod yaml;

use yaml::{Ev, Stream};

/// A file that could not be used at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {message}")]
    Io { path: String, message: String },
    #[error("{path}:{line}: invalid YAML: {message}")]
    Syntax { path: String, line: u32, message: String },
}

impl LoadError {
    pub fn path(&self) -> &str {
        match self {
            LoadError::Io { path, .. } | LoadError::Syntax { path, .. } => path,
        }
    }
    pub fn line(&self) -> u32 {
        match self {
            LoadError::Io { .. } => 0,
            LoadError::Syntax { line, .. } => *line,
        }
    }
}

/// One document that parsed as YAML but is not a usable object.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeProblem {
    /// The kind as written (may be empty when missing).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Field path of the problem, e.g. `spec.http[0].foo`.
    pub path: String,
    pub message: String,
    pub origin: Origin,
    /// The line of `path` in the file.
    pub line: u32,
}

/// Everything read from a set of inputs.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub objects: Vec<IstioObject>,
    /// Objects of other kinds, skipped by validation but kept for later stages.
    pub others: Vec<OtherObject>,
    pub problems: Vec<DecodeProblem>,
    pub errors: Vec<LoadError>,
}

impl Loaded {
    fn extend(&mut self, other: Loaded) {
        self.objects.extend(other.objects);
        self.others.extend(other.others);
        self.problems.extend(other.problems);
        self.errors.extend(other.errors);
    }
}

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Namespace of objects that do not name one.
    pub default_namespace: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { default_namespace: "default".into() }
    }
}

/// Loads each path: `-` is stdin, a directory is walked recursively for
/// `*.yaml`, `*.yml` and `*.json` (in name order, hidden entries skipped).
pub fn load_paths<P: AsRef<Path>>(paths: &[P], opts: &LoadOptions) -> Loaded {
    let mut out = Loaded::default();
    for p in paths {
        let p = p.as_ref();
        if p == Path::new("-") {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => out.extend(load_str(&text, "<stdin>", opts)),
                Err(e) => out.errors.push(LoadError::Io { path: "<stdin>".into(), message: e.to_string() }),
            }
            continue;
        }
        match config_files(p) {
            Ok(files) => {
                for f in files {
                    out.extend(load_file(&f, opts));
                }
            }
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// The config files under `path`: itself when it is a file, else the
/// matching files below it in a stable order (the mesh config file excluded).
pub fn config_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |e: std::io::Error| LoadError::Io { path: path.display().to_string(), message: e.to_string() };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| LoadError::Io { path: dir.display().to_string(), message: e.to_string() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
            .collect();
        entries.sort();
        let mut subdirs = Vec::new();
        for e in entries {
            if e.is_dir() {
                subdirs.push(e);
            } else if is_config_file(&e) {
                files.push(e);
            }
        }
        // Visit subdirectories in name order after this directory's files.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(files)
}

/// weir's mesh-wide settings file; read by the compiler, not as an Istio object.
pub const MESH_CONFIG_FILE: &str = "weir-mesh.yaml";

fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        && p.file_name().and_then(|n| n.to_str()) != Some(MESH_CONFIG_FILE)
}

/// Loads one file.
pub fn load_file(path: &Path, opts: &LoadOptions) -> Loaded {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str(&text, &name, opts),
            Err(_) => Loaded {
                errors: vec![LoadError::Io { path: name, message: "not UTF-8 text".into() }],
                ..Loaded::default()
            },
        },
        Err(e) => Loaded { errors: vec![LoadError::Io { path: name, message: e.to_string() }], ..Loaded::default() },
    }
}

/// Loads YAML or JSON text; `file` names it in messages.
pub fn load_str(text: &str, file: &str, opts: &LoadOptions) -> Loaded {
    let mut out = Loaded::default();
    let file: Arc<str> = Arc::from(file);
    let stream = match yaml::parse(text) {
        Ok(s) => s,
        Err(e) => {
            out.errors.push(LoadError::Syntax { path: file.to_string(), line: e.line, message: e.message });
            return out;
        }
    };
    for doc in &stream.docs {
        match stream.events.get(doc.start) {
            None => continue,
            Some(Ev::Scalar(s, plain)) if doc.len() == 1 && yaml::resolve(s, *plain) == yaml::Scalar::Null => continue,
            Some(_) => load_node(&stream, doc.start, &file, opts, &mut out),
        }
    }
    out
}

/// A problem decoding a standalone document (see [`decode_document`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {path}: {message}")]
pub struct DocumentError {
    pub file: String,
    pub line: u32,
    pub path: String,
    pub message: String,
}

/// Decodes the first document of `text` (YAML or JSON) into `T`, with the
/// same rules as Istio objects (unknown fields rejected, `null` = unset,
/// snake_case aliases). Used for weir's own config files such as the mesh config.
pub fn decode_document<T: DeserializeOwned + Default>(text: &str, file: &str) -> Result<T, DocumentError> {
    let err = |line: u32, path: String, message: String| DocumentError { file: file.to_string(), line, path, message };
    let stream = yaml::parse(text).map_err(|e| err(e.line, String::new(), e.message))?;
    let Some(doc) = stream.docs.iter().find(|d| !d.is_empty()) else { return Ok(T::default()) };
    let mut lines = Vec::new();
    yaml::field_lines(&stream.events, &stream.lines, doc.start, &mut lines)
        .map_err(|e| err(e.line, String::new(), e.message))?;
    let root_line = stream.lines[doc.start];
    if matches!(&stream.events[doc.start], Ev::Scalar(s, p) if yaml::resolve(s, *p) == yaml::Scalar::Null) {
        return Ok(T::default());
    }
    decode(&stream.events, Some(doc.start), "", "document").map_err(|(path, message)| {
        let origin = Origin { file: Arc::from(file), line: root_line, field_lines: FieldLines::new(lines) };
        err(origin.line_of(&path), path, message)
    })
}

/// Where the parts of one object's envelope are, as event indices.
#[derive(Default)]
struct Envelope<'e> {
    api_version: &'e str,
    kind: &'e str,
    metadata: Option<usize>,
    spec: Option<usize>,
    items: Option<usize>,
    unknown: Option<&'e str>,
}

/// Loads the object whose events start at `i` (a document root or a List item).
fn load_node(stream: &Stream<'_>, i: usize, file: &Arc<str>, opts: &LoadOptions, out: &mut Loaded) {
    let ev = &stream.events;
    let mut field_lines = Vec::new();
    if let Err(e) = yaml::field_lines(ev, &stream.lines, i, &mut field_lines) {
        out.errors.push(LoadError::Syntax { path: file.to_string(), line: e.line, message: e.message });
        return;
    }
    let origin = Origin { file: file.clone(), line: stream.lines[i], field_lines: FieldLines::new(field_lines) };
    let not_null = |v: usize| !matches!(&ev[v], Ev::Scalar(s, p) if yaml::resolve(s, *p) == yaml::Scalar::Null);
    let mut env = Envelope::default();
    for (key, v) in yaml::entries(ev, i) {
        match key {
            "apiVersion" => env.api_version = yaml::scalar_str(ev, v).unwrap_or_default(),
            "kind" => env.kind = yaml::scalar_str(ev, v).unwrap_or_default(),
            "metadata" => env.metadata = Some(v).filter(|v| not_null(*v)),
            "spec" => env.spec = Some(v).filter(|v| not_null(*v)),
            "items" => env.items = Some(v),
            "status" => {}
            other if env.unknown.is_none() && not_null(v) => env.unknown = Some(other),
            _ => {}
        }
    }
    if env.kind == "List" {
        if let Some(items) = env.items.filter(|v| matches!(ev[*v], Ev::SeqStart)) {
            let mut k = items + 1;
            while k < ev.len() && ev[k] != Ev::SeqEnd {
                load_node(stream, k, file, opts, out);
                k = yaml::skip(ev, k);
            }
        }
        return;
    }
    let meta_field = |name: &str| {
        env.metadata
            .and_then(|m| yaml::entries(ev, m).find(|(k, _)| *k == name))
            .and_then(|(_, v)| yaml::scalar_str(ev, v))
            .unwrap_or_default()
            .to_string()
    };
    let name = meta_field("name");
    let namespace = match meta_field("namespace") {
        ns if ns.is_empty() => opts.default_namespace.clone(),
        ns => ns,
    };
    let problem = |path: &str, message: String| DecodeProblem {
        kind: env.kind.to_string(),
        namespace: namespace.clone(),
        name: name.clone(),
        path: path.to_string(),
        line: origin.line_of(path),
        message,
        origin: origin.clone(),
    };
    if ev[i] != Ev::MapStart {
        out.problems.push(problem("", "expected a Kubernetes object (a mapping with apiVersion and kind)".into()));
        return;
    }
    if env.api_version.is_empty() || env.kind.is_empty() {
        let missing = if env.api_version.is_empty() { "apiVersion" } else { "kind" };
        out.problems.push(problem(missing, format!("{missing} is required")));
        return;
    }
    let (api_version, kind) = (env.api_version.to_string(), env.kind.to_string());
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
    let istio_kind = (group == NETWORKING_GROUP).then(|| Kind::from_name(&kind)).flatten();
    let Some(istio_kind) = istio_kind else {
        let raw = decode::<serde_json::Value>(ev, Some(i), "", &kind).unwrap_or(serde_json::Value::Null);
        out.others.push(OtherObject { api_version, kind, name, namespace, raw, origin });
        return;
    };
    if !NETWORKING_VERSIONS.contains(&version) {
        out.problems.push(problem(
            "apiVersion",
            format!(
                "unsupported apiVersion {api_version:?} for {kind}: use {NETWORKING_GROUP}/v1, v1beta1 or v1alpha3"
            ),
        ));
        return;
    }
    if let Some(extra) = env.unknown {
        out.problems.push(problem(extra, format!("unknown field {extra:?} in {kind}")));
        return;
    }
    let mut meta: ObjectMeta = match decode(ev, env.metadata, "metadata", &kind) {
        Ok(m) => m,
        Err((path, msg)) => return out.problems.push(problem(&path, msg)),
    };
    if meta.namespace.is_empty() {
        meta.namespace = opts.default_namespace.clone();
    }
    let s = env.spec;
    // The CRDs of these kinds require `spec`; the others default it.
    if s.is_none() && matches!(istio_kind, Kind::ServiceEntry | Kind::WorkloadEntry | Kind::WorkloadGroup) {
        out.problems.push(problem("spec", "Required value".into()));
        return;
    }
    let spec = match istio_kind {
        Kind::VirtualService => decode(ev, s, "spec", &kind).map(Spec::VirtualService),
        Kind::DestinationRule => decode(ev, s, "spec", &kind).map(Spec::DestinationRule),
        Kind::Gateway => decode(ev, s, "spec", &kind).map(Spec::Gateway),
        Kind::ServiceEntry => decode(ev, s, "spec", &kind).map(|mut se: crate::types::ServiceEntry| {
            // Endpoints usually name the same ports: one map for all of them.
            for i in 1..se.endpoints.len() {
                let (done, rest) = se.endpoints.split_at_mut(i);
                rest[0].ports.share(&done[i - 1].ports);
            }
            Spec::ServiceEntry(se)
        }),
        Kind::Sidecar => decode(ev, s, "spec", &kind).map(Spec::Sidecar),
        Kind::WorkloadEntry => decode(ev, s, "spec", &kind).map(Spec::WorkloadEntry),
        Kind::WorkloadGroup => decode(ev, s, "spec", &kind).map(Spec::WorkloadGroup),
    };
    match spec {
        Ok(spec) => out.objects.push(IstioObject { api_version, meta, spec, origin }),
        Err((path, msg)) => out.problems.push(problem(&path, msg)),
    }
}

/// Decodes the node at `at` (found at field `root`; absent means `{}`) into
/// `T`; on failure returns the field path and a message naming what to fix.
fn decode<T: DeserializeOwned + Default>(
    ev: &[Ev<'_>],
    at: Option<usize>,
    root: &str,
    kind: &str,
) -> Result<T, (String, String)> {
    let Some(at) = at else { return Ok(T::default()) };
    // Tracking the path costs an allocation per key, so only a failed decode
    // is repeated with tracking on to say where it failed.
    if let Ok(v) = T::deserialize(&mut yaml::De::new(ev, at)) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(&mut yaml::De::new(ev, at)).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (root.is_empty(), inner == "." || inner.is_empty()) {
            (_, true) => root.to_string(),
            (true, false) => inner,
            (false, false) => format!("{root}.{inner}"),
        };
        let msg = e.into_inner().to_string();
        let msg = match msg.strip_prefix("unknown field `") {
            Some(rest) => {
                let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
                let expected = expected.trim_start_matches(", ").replace('`', "");
                format!("unknown field {field:?} in {kind} ({expected})")
            }
            None => msg,
        };
        (path, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        load_str(text, "t.yaml", &LoadOptions::default())
    }

    #[test]
    fn multi_document_yaml_with_lines_and_defaults() {
        let l = load(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination:\n        host: a\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n",
        );
        assert!(l.errors.is_empty() && l.problems.is_empty(), "{l:?}");
        assert_eq!(l.objects.len(), 1);
        assert_eq!(l.others.len(), 1);
        let o = &l.objects[0];
        assert_eq!(o.meta.namespace, "default");
        assert_eq!(o.origin.line, 1);
        assert_eq!(o.origin.line_of("spec.http[0].route[0].destination.host"), 10);
        assert_eq!(o.origin.line_of("spec.http[0].timeout"), 8);
        assert_eq!(l.others[0].origin.line, 12);
    }

    #[test]
    fn unknown_field_names_its_path_and_line() {
        let l = load(
            "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: a\n  trafficPolicy:\n    bogus: 1\n",
        );
        assert_eq!(l.problems.len(), 1, "{l:?}");
        let p = &l.problems[0];
        assert_eq!(p.path, "spec.trafficPolicy.bogus");
        assert_eq!(p.line, 7);
        assert!(p.message.contains("unknown field \"bogus\""), "{}", p.message);
    }

    #[test]
    fn snake_case_json_lists_and_enum_numbers() {
        let l = load(
            r#"{"apiVersion": "v1", "kind": "List", "items": [
              {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
               "metadata": {"name": "x", "namespace": "n"},
               "spec": {"hosts": ["x"], "tls": [{"match": [{"sni_hosts": ["x"], "port": "443"}],
                        "route": [{"destination": {"host": "x"}}]}]}},
              {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
               "metadata": {"name": "s"}, "spec": {"hosts": ["s.com"], "resolution": 2}}]}"#,
        );
        assert!(l.problems.is_empty() && l.errors.is_empty(), "{l:?}");
        let Spec::VirtualService(vs) = &l.objects[0].spec else { panic!() };
        assert_eq!(vs.tls[0].matches[0].sni_hosts, vec!["x"]);
        assert_eq!(vs.tls[0].matches[0].port, 443);
        let Spec::ServiceEntry(se) = &l.objects[1].spec else { panic!() };
        assert_eq!(se.resolution, crate::types::Resolution::Dns);
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let l = load("apiVersion: v1\nkind: [\n");
        assert_eq!(l.errors.len(), 1);
        assert!(l.errors[0].line() >= 2, "{:?}", l.errors);
        let l = load("a: 1\na: 2\n");
        assert!(matches!(&l.errors[0], LoadError::Syntax { line: 2, .. }), "{:?}", l.errors);
    }

    #[test]
    fn ipv6_in_flow_lists_reads_as_go_yaml_does() {
        let l = load(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [a.com]\n  addresses: [1.2.3.4, 001:db8::]\n",
        );
        assert!(l.problems.is_empty(), "{l:?}");
        let Spec::ServiceEntry(se) = &l.objects[0].spec else { panic!() };
        assert_eq!(se.addresses, vec!["1.2.3.4", "001:db8::"]);
    }

    #[test]
    fn missing_kind_and_wrong_types_are_problems() {
        let l = load("apiVersion: networking.istio.io/v1\nmetadata: {name: x}\n");
        assert_eq!(l.problems[0].path, "kind");
        let l = load("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec:\n  servers: 3\n");
        assert_eq!(l.problems[0].path, "spec.servers");
        let l = load("apiVersion: networking.istio.io/v2\nkind: Gateway\n");
        assert_eq!(l.problems[0].path, "apiVersion");
    }
}
