//! `weir proxy-config`: the compiled snapshot for one node, as tables like
//! `istioctl proxy-config` prints, or as JSON/YAML.

use std::io::Write;
use std::path::Path;

use weir_compile::model::{ChainAction, RouteAction, Snapshot};

use super::config::{self, NodeArgs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

pub fn run(section: Section, dir: &Path, node: &NodeArgs, format: Format) -> anyhow::Result<u8> {
    let node = node.node()?;
    let cfg = config::load(dir, &node)?;
    let snap = weir_compile::compile(
        weir_compile::Input { config: &cfg.store, registry: &cfg.registry, mesh: &cfg.mesh },
        &node,
    );
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &selected(&snap, section))?;
            writeln!(out)?;
        }
        Format::Yaml => {
            let text = serde_saphyr::to_string(&selected(&snap, section))?;
            out.write_all(text.as_bytes())?;
        }
        Format::Table => table(&snap, section, &mut out)?,
    }
    for m in &snap.messages {
        eprintln!("{m}");
    }
    Ok(0)
}

fn selected(snap: &Snapshot, section: Section) -> serde_json::Value {
    let all = serde_json::to_value(snap).unwrap_or(serde_json::Value::Null);
    let pick = |k: &str| all.get(k).cloned().unwrap_or(serde_json::Value::Null);
    match section {
        Section::All => all,
        Section::Listeners => pick("listeners"),
        Section::Routes => pick("route_tables"),
        Section::Clusters => pick("clusters"),
        Section::Endpoints => serde_json::Value::Array(
            snap.clusters
                .iter()
                .flat_map(|c| {
                    c.endpoints.iter().map(move |e| serde_json::json!({"endpoint": format!("{}:{}", e.address, e.port), "cluster": c.name, "labels": e.meta.labels}))
                })
                .collect(),
        ),
    }
}

fn table(snap: &Snapshot, section: Section, out: &mut impl Write) -> std::io::Result<()> {
    let sections: &[Section] = match section {
        Section::All => &[Section::Listeners, Section::Routes, Section::Clusters, Section::Endpoints],
        s => std::slice::from_ref(match s {
            Section::Listeners => &Section::Listeners,
            Section::Routes => &Section::Routes,
            Section::Clusters => &Section::Clusters,
            _ => &Section::Endpoints,
        }),
    };
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let rows = match s {
            Section::Listeners => listeners(snap),
            Section::Routes => routes(snap),
            Section::Clusters => clusters(snap),
            _ => endpoints(snap),
        };
        print_rows(&rows, out)?;
    }
    Ok(())
}

fn listeners(snap: &Snapshot) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["ADDRESS".into(), "PORT".into(), "MATCH".into(), "DESTINATION".into()]];
    for l in &snap.listeners {
        let addr = l.address.as_deref().map(str::to_string).unwrap_or_else(|| format!("{:?}", l.bind).to_lowercase());
        for c in &l.filter_chains {
            let mut m = Vec::new();
            if !c.matcher.server_names.is_empty() {
                m.push(format!("SNI: {}", c.matcher.server_names.join(",")));
            }
            if !c.matcher.destination_subnets.is_empty() {
                m.push(format!("Addr: {}", c.matcher.destination_subnets.join(",")));
            }
            let dest = match &c.action {
                ChainAction::Http { route_table } => format!("Route: {route_table}"),
                ChainAction::Tcp { routes } => routes
                    .first()
                    .map(|r| {
                        format!(
                            "Cluster: {}",
                            r.clusters.iter().map(|c| c.cluster.to_string()).collect::<Vec<_>>().join(",")
                        )
                    })
                    .unwrap_or_else(|| "Cluster: none".into()),
                ChainAction::AutoPassthrough => "AUTO_PASSTHROUGH".into(),
            };
            rows.push(vec![
                addr.clone(),
                l.port.to_string(),
                if m.is_empty() { "ALL".into() } else { m.join("; ") },
                dest,
            ]);
        }
    }
    rows
}

fn routes(snap: &Snapshot) -> Vec<Vec<String>> {
    let mut rows =
        vec![vec!["NAME".into(), "VHOST NAME".into(), "DOMAINS".into(), "MATCH".into(), "VIRTUAL SERVICE".into()]];
    for t in &snap.route_tables {
        for vh in &t.virtual_hosts {
            let domains = if vh.domains.len() > 3 {
                format!("{} + {} more", vh.domains[..2].join(", "), vh.domains.len() - 2)
            } else {
                vh.domains.join(", ")
            };
            if vh.routes.is_empty() {
                rows.push(vec![t.name.to_string(), vh.name.to_string(), domains.clone(), "-".into(), "404".into()]);
            }
            for r in &vh.routes {
                let m = match &r.matcher.path {
                    Some(p) => match p {
                        weir_compile::model::PathMatch::Exact(e) => e.to_string(),
                        weir_compile::model::PathMatch::Prefix(p) => format!("{p}*"),
                        weir_compile::model::PathMatch::Regex(r) => format!("~{r}"),
                    },
                    None => "/*".into(),
                };
                let extra = if r.matcher.headers.is_empty() {
                    String::new()
                } else {
                    format!(" +{} header(s)", r.matcher.headers.len())
                };
                let vs = match (&r.origin, &r.action) {
                    (Some(o), _) => o.object.trim_start_matches("VirtualService ").to_string(),
                    (None, RouteAction::DirectResponse { status, .. }) => status.to_string(),
                    (None, _) => "-".into(),
                };
                rows.push(vec![t.name.to_string(), vh.name.to_string(), domains.clone(), format!("{m}{extra}"), vs]);
            }
        }
    }
    rows
}

fn clusters(snap: &Snapshot) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "SERVICE FQDN".into(),
        "PORT".into(),
        "SUBSET".into(),
        "DIRECTION".into(),
        "TYPE".into(),
        "DESTINATION RULE".into(),
    ]];
    for c in &snap.clusters {
        rows.push(vec![
            c.service.to_string(),
            c.port.to_string(),
            c.subset.as_deref().unwrap_or("-").to_string(),
            "outbound".into(),
            format!("{:?}", c.discovery).to_uppercase(),
            c.destination_rules.join(",").replace("DestinationRule ", ""),
        ]);
    }
    rows
}

fn endpoints(snap: &Snapshot) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["ENDPOINT".into(), "STATUS".into(), "CLUSTER".into()]];
    for c in &snap.clusters {
        for e in c.endpoints.iter() {
            rows.push(vec![format!("{}:{}", e.address, e.port), "HEALTHY".into(), c.name.to_string()]);
        }
    }
    rows
}

fn print_rows(rows: &[Vec<String>], out: &mut impl Write) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| if i + 1 == r.len() { s.clone() } else { format!("{s:<w$}", w = widths[i]) })
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    Ok(())
}
