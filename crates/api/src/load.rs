//! Reads Istio configuration from files, directories and stdin: multi-document
//! YAML, JSON and `kind: List`, with the line of every field kept for messages.
//!
//! A file that cannot be read or parsed is a [`LoadError`] (the whole file is
//! unusable). A document that parses but does not decode (unknown field,
//! wrong type) is a [`DecodeProblem`] on that one object; the rest still load.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::types::{
    FieldLines, IstioObject, Kind, NETWORKING_GROUP, NETWORKING_VERSIONS, ObjectMeta, Origin, OtherObject, Spec,
};

/// Nesting deeper than this is refused (no Istio object comes close).
const MAX_DEPTH: usize = 64;

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
/// matching files below it in a stable order.
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

fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
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
    let docs = match MarkedYaml::load_from_str(text) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(LoadError::Syntax {
                path: file.to_string(),
                line: e.marker().line() as u32,
                message: e.info().to_string(),
            });
            return out;
        }
    };
    for doc in &docs {
        if matches!(doc.data, YamlData::Value(Scalar::Null)) {
            continue; // empty document, e.g. a trailing `---`
        }
        if let Err(e) = load_document(doc, text, &file, opts, &mut out) {
            out.errors.push(e);
        }
    }
    out
}

fn load_document(
    doc: &MarkedYaml<'_>,
    text: &str,
    file: &Arc<str>,
    opts: &LoadOptions,
    out: &mut Loaded,
) -> Result<(), LoadError> {
    let line = line_of(doc);
    let mut lines = Vec::new();
    let mut cx = Convert { file, text, lines: &mut lines };
    let value = cx.to_json(doc, &mut String::new(), 0)?;
    // A `kind: List` holds objects in `items`; each is loaded as its own document.
    if value.get("kind").and_then(Value::as_str) == Some("List") {
        if let YamlData::Mapping(map) = &doc.data {
            for (k, v) in map.iter() {
                if matches!(&k.data, YamlData::Value(Scalar::String(s)) if s == "items") {
                    if let YamlData::Sequence(items) = &v.data {
                        for item in items {
                            load_document(item, text, file, opts, out)?;
                        }
                    }
                }
            }
        }
        return Ok(());
    }
    let origin = Origin { file: file.clone(), line, field_lines: Arc::new(FieldLines::new(lines)) };
    classify(value, origin, opts, out);
    Ok(())
}

fn line_of(node: &MarkedYaml<'_>) -> u32 {
    node.span.start.line() as u32
}

/// State for converting one document.
struct Convert<'a> {
    file: &'a Arc<str>,
    text: &'a str,
    lines: &'a mut Vec<(Box<str>, u32)>,
}

impl Convert<'_> {
    fn syntax(&self, line: u32, message: String) -> LoadError {
        LoadError::Syntax { path: self.file.to_string(), line, message }
    }

    /// Converts a YAML node to JSON, recording the line of every field path.
    /// Null mapping values are dropped: protobuf JSON treats `null` as unset.
    fn to_json(&mut self, node: &MarkedYaml<'_>, path: &mut String, depth: usize) -> Result<Value, LoadError> {
        if depth > MAX_DEPTH {
            return Err(self.syntax(line_of(node), format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        if !path.is_empty() {
            self.lines.push((path.as_str().into(), line_of(node)));
        }
        Ok(match &node.data {
            YamlData::Value(s) => scalar_to_json(s),
            YamlData::Representation(text, _, _) => scalar_to_json(&Scalar::parse_from_cow(text.clone())),
            YamlData::Tagged(tag, inner) => {
                let v = self.to_json(inner, path, depth + 1)?;
                if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" {
                    match v {
                        Value::Number(n) => Value::String(n.to_string()),
                        Value::Bool(b) => Value::String(b.to_string()),
                        other => other,
                    }
                } else {
                    v
                }
            }
            YamlData::Sequence(items) => {
                let mut arr = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    let v = match self.colon_scalar(item) {
                        Some(s) => {
                            self.lines.push((path.as_str().into(), line_of(item)));
                            Value::String(s)
                        }
                        None => self.to_json(item, path, depth + 1)?,
                    };
                    arr.push(v);
                    path.truncate(len);
                }
                Value::Array(arr)
            }
            YamlData::Mapping(map) => {
                let mut obj = Map::new();
                for (k, v) in map.iter() {
                    let key = match &k.data {
                        YamlData::Value(s) => scalar_key(s),
                        YamlData::Representation(text, _, _) => scalar_key(&Scalar::parse_from_cow(text.clone())),
                        _ => return Err(self.syntax(line_of(k), "mapping keys must be plain scalars".into())),
                    };
                    if obj.contains_key(&key) {
                        return Err(self.syntax(line_of(k), format!("duplicate key {key:?}")));
                    }
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key);
                    let val = self.to_json(v, path, depth + 1)?;
                    path.truncate(len);
                    if !val.is_null() {
                        obj.insert(key, val);
                    }
                }
                Value::Object(obj)
            }
            YamlData::Alias(_) => return Err(self.syntax(line_of(node), "YAML aliases are not supported".into())),
            YamlData::BadValue => return Err(self.syntax(line_of(node), "invalid value".into())),
        })
    }

    /// Kubernetes' YAML reader (go-yaml) reads `[a, 2001:db8::]` as two
    /// strings, while YAML 1.2 reads the second item as the one-entry mapping
    /// `{"2001:db8:": null}` because its last `:` precedes `]`. Users write
    /// IPv6 addresses this way, so such an item is read back as the string.
    fn colon_scalar(&self, item: &MarkedYaml<'_>) -> Option<String> {
        let YamlData::Mapping(map) = &item.data else { return None };
        if map.len() != 1 {
            return None;
        }
        let (k, v) = map.iter().next()?;
        if !matches!(v.data, YamlData::Value(Scalar::Null)) {
            return None;
        }
        let key = match &k.data {
            YamlData::Value(Scalar::String(s)) => s.to_string(),
            YamlData::Value(s @ (Scalar::Integer(_) | Scalar::FloatingPoint(_))) => scalar_key(s),
            _ => return None,
        };
        let mut after = self.text.chars().skip(k.span.end.index());
        let (colon, next) = (after.next()?, after.next()?);
        (colon == ':' && matches!(next, ']' | ',' | '}')).then(|| format!("{key}:"))
    }
}

fn scalar_to_json(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::from(*i),
        Scalar::FloatingPoint(f) => serde_json::Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

fn scalar_key(s: &Scalar<'_>) -> String {
    match s {
        Scalar::Null => "null".into(),
        Scalar::Boolean(b) => b.to_string(),
        Scalar::Integer(i) => i.to_string(),
        Scalar::FloatingPoint(f) => f.to_string(),
        Scalar::String(s) => s.to_string(),
    }
}

/// Sorts one decoded document into an Istio object, another object, or a problem.
fn classify(mut value: Value, origin: Origin, opts: &LoadOptions, out: &mut Loaded) {
    let str_field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = str_field(&value, "apiVersion");
    let kind = str_field(&value, "kind");
    let meta_v = value.get("metadata").cloned().unwrap_or(Value::Null);
    let name = str_field(&meta_v, "name");
    let namespace = match str_field(&meta_v, "namespace") {
        ns if ns.is_empty() => opts.default_namespace.clone(),
        ns => ns,
    };
    let problem = |path: &str, message: String| DecodeProblem {
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        path: path.to_string(),
        line: origin.line_of(path),
        message,
        origin: origin.clone(),
    };
    if !value.is_object() {
        out.problems.push(problem("", "expected a Kubernetes object (a mapping with apiVersion and kind)".into()));
        return;
    }
    if api_version.is_empty() || kind.is_empty() {
        let missing = if api_version.is_empty() { "apiVersion" } else { "kind" };
        out.problems.push(problem(missing, format!("{missing} is required")));
        return;
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
    let istio_kind = (group == NETWORKING_GROUP).then(|| Kind::from_name(&kind)).flatten();
    let Some(istio_kind) = istio_kind else {
        out.others.push(OtherObject { api_version, kind, name, namespace, raw: value, origin });
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
    let Some(obj) = value.as_object_mut() else { return };
    let meta_raw = obj.remove("metadata").unwrap_or_else(|| Value::Object(Map::new()));
    let spec_raw = obj.remove("spec").unwrap_or_else(|| Value::Object(Map::new()));
    obj.remove("apiVersion");
    obj.remove("kind");
    obj.remove("status");
    if let Some(extra) = obj.keys().next() {
        out.problems.push(problem(extra, format!("unknown field {extra:?} in {kind}")));
        return;
    }
    let mut meta: ObjectMeta = match decode(meta_raw, "metadata", &kind) {
        Ok(m) => m,
        Err((path, msg)) => return out.problems.push(problem(&path, msg)),
    };
    if meta.namespace.is_empty() {
        meta.namespace = opts.default_namespace.clone();
    }
    let spec = match istio_kind {
        Kind::VirtualService => decode(spec_raw, "spec", &kind).map(Spec::VirtualService),
        Kind::DestinationRule => decode(spec_raw, "spec", &kind).map(Spec::DestinationRule),
        Kind::Gateway => decode(spec_raw, "spec", &kind).map(Spec::Gateway),
        Kind::ServiceEntry => decode(spec_raw, "spec", &kind).map(Spec::ServiceEntry),
        Kind::Sidecar => decode(spec_raw, "spec", &kind).map(Spec::Sidecar),
        Kind::WorkloadEntry => decode(spec_raw, "spec", &kind).map(Spec::WorkloadEntry),
        Kind::WorkloadGroup => decode(spec_raw, "spec", &kind).map(Spec::WorkloadGroup),
    };
    match spec {
        Ok(spec) => out.objects.push(IstioObject { api_version, meta, spec, origin }),
        Err((path, msg)) => out.problems.push(problem(&path, msg)),
    }
}

/// Decodes `value` (found at `root`) into `T`; on failure returns the field
/// path and a message that names what to fix.
fn decode<T: DeserializeOwned>(value: Value, root: &str, kind: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() { root.to_string() } else { format!("{root}.{inner}") };
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
