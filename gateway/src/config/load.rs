//! Reading config files: the main file, its `include:` globs, and where every
//! list item came from (for error positions and relative file paths).

use std::fmt;
use std::path::{Path, PathBuf};

use super::model::Config;
use super::source_map::{LineCol, SourceMap};

/// A problem in a config file, printed as `file:line:column: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// All problems found in a configuration, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The list sections whose items may come from different files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    /// `listeners`
    Listeners,
    /// `clusters`
    Clusters,
    /// `routes`
    Routes,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Listeners => "listeners",
            Section::Clusters => "clusters",
            Section::Routes => "routes",
        }
    }
}

struct SourceFile {
    path: PathBuf,
    map: SourceMap,
}

/// The directory part of a glob: the longest leading path without wildcards.
pub fn glob_dir(pattern: &Path) -> PathBuf {
    let mut dir = PathBuf::new();
    for c in pattern.components() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[', '{']) {
            return dir;
        }
        dir.push(c);
    }
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// Where the pieces of a merged config came from.
pub struct Sources {
    files: Vec<SourceFile>,
    /// Per section: for each merged item, (file index, index within that file).
    origins: [Vec<(usize, usize)>; 3],
    /// The `include:` globs, as full patterns.
    include_globs: Vec<PathBuf>,
}

impl Sources {
    /// The `include:` globs, as full patterns.
    pub fn include_globs(&self) -> Vec<PathBuf> {
        self.include_globs.clone()
    }

    /// Every file that contributed to the config, main file first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    fn origin(&self, section: Section, idx: usize) -> (usize, usize) {
        self.origins[section as usize]
            .get(idx)
            .copied()
            .unwrap_or((0, idx))
    }

    /// A diagnostic at `section[idx].sub` (sub may be empty).
    pub fn at(
        &self,
        section: Section,
        idx: usize,
        sub: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (file, local) = self.origin(section, idx);
        let path = if sub.is_empty() {
            format!("{}[{local}]", section.key())
        } else {
            format!("{}[{local}].{sub}", section.key())
        };
        self.diag(file, &path, message.into())
    }

    /// Whether `section[idx].sub` (or, without a section, the main file's
    /// `sub`) is written in the source.
    pub fn has(&self, section: Option<(Section, usize)>, sub: &str) -> bool {
        match section {
            Some((s, idx)) => {
                let (file, local) = self.origin(s, idx);
                let path = format!("{}[{local}].{sub}", s.key());
                self.files[file].map.contains(&path)
            }
            None => self.files[0].map.contains(sub),
        }
    }

    /// A diagnostic at a path of the main file (e.g. `admin.listen`).
    pub fn top(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        self.diag(0, path, message.into())
    }

    fn diag(&self, file: usize, path: &str, message: String) -> Diagnostic {
        let f = &self.files[file];
        let LineCol { line, column } = f.map.locate(path);
        Diagnostic {
            file: f.path.clone(),
            line,
            column,
            message,
        }
    }

    /// Resolves a path written in a config item relative to the directory of
    /// the file that item came from.
    pub fn resolve(&self, section: Section, idx: usize, p: &str) -> PathBuf {
        let (file, _) = self.origin(section, idx);
        self.resolve_in(file, p)
    }

    /// Resolves a path written at the top level of the main file.
    pub fn resolve_top(&self, p: &str) -> PathBuf {
        self.resolve_in(0, p)
    }

    fn resolve_in(&self, file: usize, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match self.files[file].path.parent() {
            Some(dir) => dir.join(p),
            None => p.to_path_buf(),
        }
    }
}

/// A parsed (not yet validated) configuration and where it came from.
pub struct LoadedConfig {
    /// The merged configuration.
    pub config: Config,
    /// Positions and file origins.
    pub sources: Sources,
}

fn whole_file(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message,
    }
}

fn parse_file(path: &Path) -> Result<(Config, SourceMap), Diagnostic> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| whole_file(path, format!("cannot read config file: {e}")))?;
    let config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_yaml::from_str(&text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            // serde_yaml embeds " at line L column C"; we print it up front.
            let msg = strip_position(&e.to_string());
            Diagnostic {
                file: path.to_path_buf(),
                line,
                column,
                message: msg,
            }
        })?
    };
    Ok((config, SourceMap::build(&text)))
}

/// Removes serde_yaml's own " at line L column C" from a message.
fn strip_position(msg: &str) -> String {
    static POSITION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r" at line \d+ column \d+").expect("static regex")
    });
    POSITION.replace_all(msg, "").into_owned()
}

/// Reads `path` and every file its `include:` globs match, and merges them.
/// Syntax and schema errors of every file are reported together.
pub fn load(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    let (mut config, map) = parse_file(path).map_err(|d| Diagnostics(vec![d]))?;
    let mut sources = Sources {
        files: vec![SourceFile {
            path: path.to_path_buf(),
            map,
        }],
        origins: Default::default(),
        include_globs: Vec::new(),
    };
    for (section, len) in [
        (Section::Listeners, config.listeners.len()),
        (Section::Clusters, config.clusters.len()),
        (Section::Routes, config.routes.len()),
    ] {
        sources.origins[section as usize] = (0..len).map(|i| (0, i)).collect();
    }

    let mut errors = Vec::new();
    let base = path.parent().unwrap_or(Path::new("."));
    for (gi, pattern) in config.include.clone().iter().enumerate() {
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            base.join(pattern)
        };
        sources.include_globs.push(full.clone());
        let matches = match glob::glob(&full.to_string_lossy()) {
            Ok(m) => m,
            Err(e) => {
                errors.push(sources.top(
                    &format!("include[{gi}]"),
                    format!("bad include pattern `{pattern}`: {e}"),
                ));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = matches
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            if sources.files.iter().any(|f| f.path == file) {
                continue;
            }
            let (inc, map) = match parse_file(&file) {
                Ok(x) => x,
                Err(d) => {
                    errors.push(d);
                    continue;
                }
            };
            for key in ["gateway", "admin", "telemetry", "include"] {
                if map.contains(key) {
                    let LineCol { line, column } = map.locate(key);
                    errors.push(Diagnostic {
                        file: file.clone(),
                        line,
                        column,
                        message: format!(
                            "`{key}` may only appear in the main config file; included files hold listeners, clusters and routes"
                        ),
                    });
                }
            }
            let fi = sources.files.len();
            sources.files.push(SourceFile { path: file, map });
            let mut append = |section: Section, n: usize| {
                sources.origins[section as usize].extend((0..n).map(|i| (fi, i)));
            };
            append(Section::Listeners, inc.listeners.len());
            append(Section::Clusters, inc.clusters.len());
            append(Section::Routes, inc.routes.len());
            config.listeners.extend(inc.listeners);
            config.clusters.extend(inc.clusters);
            config.routes.extend(inc.routes);
        }
    }
    if errors.is_empty() {
        Ok(LoadedConfig { config, sources })
    } else {
        Err(Diagnostics(errors))
    }
}
