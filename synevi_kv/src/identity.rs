//! Node ids and serials that stay the same across restarts.
//!
//! A synevi store remembers the id of the node that created it and refuses to open for
//! another, and every member must know every other member's id. `synevi-kv` therefore:
//!
//! - writes `identity.toml` (serial and node id) into a node's data directory the first
//!   time it is used, and checks it on every later start, so a node can never come back
//!   under another identity, or open another node's data;
//! - by default derives a node's id from its serial ([`default_node_id`]), so that peers
//!   given as `--peer SERIAL=URL` need no id; `--node-id` and `--peer SERIAL=ID@URL` choose
//!   ids explicitly;
//! - for a local cluster (`synevi-kv cluster`), keeps the members' serials and (random)
//!   ids in `cluster.toml` at the top of the data directory ([`ClusterLayout`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use synevi::Ulid;

/// The file in a node's data directory that holds its identity.
pub const IDENTITY_FILE: &str = "identity.toml";

/// The file at the top of a local cluster's data directory that holds its members.
pub const CLUSTER_FILE: &str = "cluster.toml";

/// The high 80 bits of every derived node id: the ASCII bytes of "synevi-kv" and a zero,
/// so a derived id is recognisable in logs.
const DERIVED_ID_PREFIX: u128 = 0x7379_6e65_7669_2d6b_7600 << 48;

/// The node id a node with this serial has unless one is chosen explicitly: a fixed
/// prefix and the serial.
///
/// ```
/// use synevi_kv::identity::default_node_id;
///
/// assert_eq!(default_node_id(1).to_string(), "3KF5Q6AXK95NNQC00000000001");
/// assert_eq!(default_node_id(3).to_string(), "3KF5Q6AXK95NNQC00000000003");
/// ```
pub fn default_node_id(serial: u16) -> Ulid {
    Ulid(DERIVED_ID_PREFIX | u128::from(serial))
}

/// Problems with identity files.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is not what this program writes.
    #[error("{path} is not a valid identity file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data directory belongs to another node than the one being started.
    #[error("{path} belongs to node {found_serial} (id {found_id}), not to node {serial} (id {id}); use that node's serial and id, or another data directory")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The serial asked for.
        serial: u16,
        /// The id asked for.
        id: Ulid,
        /// The serial in the file.
        found_serial: u16,
        /// The id in the file.
        found_id: Ulid,
    },
}

/// A node's identity, as stored in `identity.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node's serial.
    pub serial: u16,
    /// The node's id.
    pub node_id: Ulid,
}

impl Identity {
    /// The identity of the node that uses `dir`: the one recorded there, which must have
    /// this `serial` (and, if given, this `node_id`); on first use, `node_id` or
    /// [`default_node_id`], recorded now.
    pub fn load_or_create(
        dir: &Path,
        serial: u16,
        node_id: Option<Ulid>,
    ) -> Result<Identity, IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        let wanted = node_id.unwrap_or_else(|| default_node_id(serial));
        if let Some(found) = read_toml::<Identity>(&path)? {
            if found.serial != serial || node_id.is_some_and(|id| id != found.node_id) {
                return Err(IdentityError::Mismatch {
                    path,
                    serial,
                    id: wanted,
                    found_serial: found.serial,
                    found_id: found.node_id,
                });
            }
            return Ok(found);
        }
        let identity = Identity {
            serial,
            node_id: wanted,
        };
        write_toml(
            &path,
            "# The identity of the synevi-kv node that uses this directory. Written on first\n\
             # start and checked on every later one; do not edit.\n",
            &identity,
        )?;
        Ok(identity)
    }
}

/// The members of a local cluster (`synevi-kv cluster`), as stored in `cluster.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLayout {
    /// The members, by serial 1..=n.
    pub nodes: Vec<Identity>,
}

impl ClusterLayout {
    /// The cluster recorded in `dir`, which must have `nodes` members; on first use, a
    /// new cluster of `nodes` members with serials 1..=n and random ids, recorded now.
    pub fn load_or_create(dir: &Path, nodes: u16) -> Result<ClusterLayout, IdentityError> {
        let path = dir.join(CLUSTER_FILE);
        if let Some(layout) = read_toml::<ClusterLayout>(&path)? {
            let serials: Vec<u16> = layout.nodes.iter().map(|node| node.serial).collect();
            let expected: Vec<u16> = (1..=nodes).collect();
            if serials != expected {
                return Err(IdentityError::Malformed {
                    path,
                    reason: format!(
                        "it records a cluster of serials {serials:?}, but {nodes} nodes were asked \
                         for; use --nodes {} or another data directory",
                        layout.nodes.len()
                    ),
                });
            }
            return Ok(layout);
        }
        let layout = ClusterLayout {
            nodes: (1..=nodes)
                .map(|serial| Identity {
                    serial,
                    node_id: Ulid::new(),
                })
                .collect(),
        };
        write_toml(
            &path,
            "# The members of the local synevi-kv cluster kept in this directory. Written on\n\
             # first start and read on every later one; do not edit.\n",
            &layout,
        )?;
        Ok(layout)
    }
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, IdentityError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IdentityError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|error| IdentityError::Malformed {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
}

/// Writes the file whole or not at all (a temporary file renamed into place, synced).
fn write_toml<T: Serialize>(path: &Path, comment: &str, value: &T) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let body = toml::to_string(value).map_err(|error| IdentityError::Malformed {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let temporary = path.with_extension("toml.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(comment.as_bytes()).map_err(io)?;
    file.write_all(body.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(default_node_id(1), default_node_id(1));
        assert_ne!(default_node_id(1), default_node_id(2));
        assert_eq!(default_node_id(7).0 & 0xffff, 7);
    }

    #[test]
    fn identity_is_recorded_then_checked() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = Identity::load_or_create(dir.path(), 2, None).expect("created");
        assert_eq!(first.node_id, default_node_id(2));
        let again = Identity::load_or_create(dir.path(), 2, None).expect("loaded");
        assert_eq!(again, first);
        assert!(matches!(
            Identity::load_or_create(dir.path(), 3, None),
            Err(IdentityError::Mismatch {
                found_serial: 2,
                ..
            })
        ));
        assert!(matches!(
            Identity::load_or_create(dir.path(), 2, Some(Ulid::new())),
            Err(IdentityError::Mismatch { .. })
        ));
        std::fs::write(dir.path().join(IDENTITY_FILE), "serial = \"x\"").expect("written");
        assert!(matches!(
            Identity::load_or_create(dir.path(), 2, None),
            Err(IdentityError::Malformed { .. })
        ));
    }

    #[test]
    fn cluster_layout_keeps_its_ids() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = ClusterLayout::load_or_create(dir.path(), 3).expect("created");
        assert_eq!(first.nodes.len(), 3);
        let again = ClusterLayout::load_or_create(dir.path(), 3).expect("loaded");
        assert_eq!(again, first);
        assert!(ClusterLayout::load_or_create(dir.path(), 5).is_err());
    }
}
