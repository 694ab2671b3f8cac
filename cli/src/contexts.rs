//! The client config: named contexts (control planes the client can talk to) and the
//! current one, in `$BERTH_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/berth/config.yaml`,
//! else `~/.config/berth/config.yaml`; and `berth context list|use|add|rm|current`.
//! The file may hold API keys, so it is written with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::outln;
use crate::output::{self, Format, Table};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, ContextEntry>,
}

/// One control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    pub api_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List the contexts; the current one is marked with *.
    List {
        /// Output format: table, wide, json or yaml.
        #[arg(short = 'o', long, default_value = "table", value_enum)]
        output: Format,
    },
    /// Make NAME the current context.
    Use {
        /// The context's name.
        name: String,
    },
    /// Add (or replace) a context.
    Add {
        /// The context's name.
        name: String,
        /// The control plane's public API URL.
        #[arg(long)]
        api_url: String,
        /// File holding the API key (stored as an absolute path).
        #[arg(long, conflicts_with = "api_key")]
        api_key_file: Option<PathBuf>,
        /// The API key itself (stored in the config file, which is mode 0600).
        #[arg(long)]
        api_key: Option<String>,
        /// CA certificate to trust for an https:// URL (stored as an absolute path).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Make it the current context too (the first context added always is).
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Remove a context.
    Rm {
        /// The context's name.
        name: String,
    },
    /// Print the current context's name.
    Current,
}

/// Where the client config lives.
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BERTH_CLIENT_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(dir).join("berth/config.yaml"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config/berth/config.yaml")),
        None => bail!("no HOME, XDG_CONFIG_HOME or BERTH_CLIENT_CONFIG to find the client config"),
    }
}

impl ClientConfig {
    /// The config at `path`; an absent file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(Self::default()),
            Ok(text) => serde_yaml_ng::from_str(&text)
                .with_context(|| format!("cannot parse the client config {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err)
                .with_context(|| format!("cannot read the client config {}", path.display())),
        }
    }

    /// Writes the config to `path` (mode 0600) through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_yaml_ng::to_string(self)?;
        let temporary = path.with_extension("yaml.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        // a leftover temporary file may have had other permissions
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    fn get(&self, name: &str) -> anyhow::Result<&ContextEntry> {
        self.contexts.get(name).with_context(|| {
            let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
            format!(
                "no context {name:?} (known: {})",
                if known.is_empty() {
                    "none; add one with berth context add".to_owned()
                } else {
                    known.join(", ")
                }
            )
        })
    }
}

/// The context a client command uses: `name` when given, else the current one, else
/// none.
pub fn selected(name: Option<&str>) -> anyhow::Result<Option<ContextEntry>> {
    let path = config_path();
    let config = match (&path, name) {
        (Ok(path), _) => ClientConfig::load(path)?,
        (Err(_), None) => return Ok(None),
        (Err(err), Some(_)) => bail!("{err}"),
    };
    match name.or(config.current_context.as_deref()) {
        Some(name) => Ok(Some(config.get(name)?.clone())),
        None => Ok(None),
    }
}

pub fn run(command: ContextCommand) -> anyhow::Result<()> {
    let path = config_path()?;
    let mut config = ClientConfig::load(&path)?;
    match command {
        ContextCommand::List { output } => list(&config, output),
        ContextCommand::Current => match &config.current_context {
            Some(name) => {
                outln!("{name}")?;
                Ok(())
            }
            None => bail!("no current context (berth context use NAME)"),
        },
        ContextCommand::Use { name } => {
            config.get(&name)?;
            config.current_context = Some(name.clone());
            config.save(&path)?;
            eprintln!("current context: {name}");
            Ok(())
        }
        ContextCommand::Add {
            name,
            api_url,
            api_key_file,
            api_key,
            ca_file,
            make_current,
        } => {
            if !api_url.starts_with("http://") && !api_url.starts_with("https://") {
                bail!("api url {api_url:?} must start with http:// or https://");
            }
            let entry = ContextEntry {
                api_url,
                api_key,
                api_key_file: api_key_file.map(absolute).transpose()?,
                ca_file: ca_file.map(absolute).transpose()?,
            };
            config.contexts.insert(name.clone(), entry);
            if make_current || config.current_context.is_none() {
                config.current_context = Some(name.clone());
            }
            config.save(&path)?;
            eprintln!("context {name} saved in {}", path.display());
            Ok(())
        }
        ContextCommand::Rm { name } => {
            config.get(&name)?;
            config.contexts.remove(&name);
            if config.current_context.as_deref() == Some(name.as_str()) {
                config.current_context = None;
            }
            config.save(&path)?;
            eprintln!("context {name} removed");
            Ok(())
        }
    }
}

fn list(config: &ClientConfig, format: Format) -> anyhow::Result<()> {
    if matches!(format, Format::Json | Format::Yaml) {
        // keys stay out of listings
        let mut shown = config.clone();
        for entry in shown.contexts.values_mut() {
            if entry.api_key.is_some() {
                entry.api_key = Some("(hidden)".into());
            }
        }
        return output::structured(format, &serde_json::to_value(&shown)?);
    }
    let mut table = Table::new(&["CURRENT", "NAME", "API URL", "KEY", "CA"]);
    for (name, entry) in &config.contexts {
        let current = config.current_context.as_deref() == Some(name.as_str());
        let key = match (&entry.api_key, &entry.api_key_file) {
            (Some(_), _) => "(in config)".to_owned(),
            (None, Some(file)) => file.display().to_string(),
            (None, None) => "-".to_owned(),
        };
        table.row(vec![
            if current { "*" } else { "" }.to_owned(),
            name.clone(),
            entry.api_url.clone(),
            key,
            entry
                .ca_file
                .as_ref()
                .map_or("-".to_owned(), |f| f.display().to_string()),
        ]);
    }
    table.print(&output::TableStyle::default())
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir()?.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth/config.yaml");
        assert_eq!(ClientConfig::load(&path).unwrap(), ClientConfig::default());
        let mut config = ClientConfig::default();
        config.contexts.insert(
            "prod".into(),
            ContextEntry {
                api_url: "https://cp:7423".into(),
                api_key: None,
                api_key_file: Some("/k".into()),
                ca_file: None,
            },
        );
        config.current_context = Some("prod".into());
        config.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ClientConfig::load(&path).unwrap(), config);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current_context: prod"), "{text}");
        assert!(config.get("nope").is_err());
    }
}
