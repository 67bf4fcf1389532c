//! Opening an LMDB store's directory: refusing what is not a synevi store, creating a new one
//! atomically, and checking the format record of an existing one.

use std::path::Path;

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, RwTxn, WithoutTls};
use synevi_types::{Serial, SyneviError};

use super::codec::{table, FormatRecord, FORMAT_VERSION, KEY_FORMAT};
use super::config::Validated;
use super::{corrupt, map_error};

/// The files LMDB keeps in a store's directory, and the store's commit log; anything else
/// there is not ours.
const LMDB_FILES: [&str; 4] = [
    "data.mdb",
    "lock.mdb",
    super::log::LOG_FILES[0],
    super::log::LOG_FILES[1],
];

/// Room for a few more named databases than we use, so that a foreign environment with more
/// tables is reported as foreign rather than failing with `MDB_DBS_FULL`.
const DATABASES_MAX: u32 = 16;

/// The store's tables. LMDB database handles are plain integers, valid for as long as the
/// environment is open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tables {
    pub(crate) meta: Database<Bytes, Bytes>,
    pub(crate) transactions: Database<Bytes, Bytes>,
    pub(crate) forgotten: Database<Bytes, Bytes>,
    pub(crate) floors: Database<Bytes, Bytes>,
    pub(crate) events: Database<Bytes, Bytes>,
}

/// Opens (creating if needed) the store in `path` for node `serial`.
pub(crate) fn open(
    path: &Path,
    serial: Serial,
    config: &Validated,
) -> Result<(Env<WithoutTls>, Tables), SyneviError> {
    inspect_directory(path)?;
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(config.initial).max_dbs(DATABASES_MAX);
    // SAFETY: LMDB maps the file into memory; the mapping must not be changed behind its back.
    // heed refuses to open the same path twice in one process (`EnvAlreadyOpened`), and the
    // store's docs require that no other process opens the directory while this one does.
    // We never use `WRITE_MAP` or other unsafe flags: writes go through LMDB's own API.
    let env = unsafe { options.open(path) }
        .map_err(|error| map_error(path, "opening the LMDB environment", error))?;
    // A process killed while reading leaves its slot in the lock file's reader table; clear
    // such slots so they do not pin old pages forever.
    env.clear_stale_readers()
        .map_err(|error| map_error(path, "clearing stale readers", error))?;
    leave_room_to_grow(&env, path, config)?;
    let tables = identify_or_create(&env, path, serial)?;
    Ok((env, tables))
}

/// LMDB opens an existing store with the configured initial map size if the data fits in
/// it, which for a store that grew would make the first commit after a restart find the map
/// full. Start with one growth step of room above the data file instead (up to the maximum).
fn leave_room_to_grow(
    env: &Env<WithoutTls>,
    path: &Path,
    config: &Validated,
) -> Result<(), SyneviError> {
    let file = env
        .real_disk_size()
        .map_err(|error| map_error(path, "measuring the data file", error))?;
    let file = usize::try_from(file).unwrap_or(usize::MAX);
    let current = env.info().map_size;
    let wanted = file
        .saturating_add(config.growth)
        .min(config.max)
        .checked_next_multiple_of(config.page)
        .unwrap_or(config.max);
    if wanted <= current {
        return Ok(());
    }
    // SAFETY: the environment was opened just now and no transaction is open on it, as
    // `mdb_env_set_mapsize` requires.
    unsafe { env.resize(wanted) }.map_err(|error| map_error(path, "sizing the memory map", error))
}

/// Creates `path` if missing; refuses a path that is not a directory or that holds files
/// other than LMDB's.
fn inspect_directory(path: &Path) -> Result<(), SyneviError> {
    let io_error = |doing: &str, error: std::io::Error| {
        SyneviError::Store(format!("{doing} {}: {error}", path.display()))
    };
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::create_dir_all(path)
                .map_err(|error| io_error("cannot create the store directory", error));
        }
        Err(error) => return Err(io_error("cannot inspect the store directory", error)),
        Ok(metadata) if !metadata.is_dir() => {
            return Err(corrupt(path, "the path is not a directory"));
        }
        Ok(_) => {}
    }
    let entries = std::fs::read_dir(path)
        .map_err(|error| io_error("cannot list the store directory", error))?;
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io_error("cannot list the store directory", error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !LMDB_FILES.contains(&name.as_str()) {
            foreign.push(name);
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let shown = foreign.len().min(3);
    Err(corrupt(
        path,
        format!(
            "the directory holds {} file(s) that are not part of a synevi store ({}{}); \
             give the store an empty or new directory",
            foreign.len(),
            foreign[..shown].join(", "),
            if foreign.len() > shown { ", ..." } else { "" }
        ),
    ))
}

/// Checks the format record of an existing store, or creates the tables and the record of a
/// new one, in one write transaction: a crash while creating leaves an empty environment,
/// which the next open creates again.
fn identify_or_create(
    env: &Env<WithoutTls>,
    path: &Path,
    serial: Serial,
) -> Result<Tables, SyneviError> {
    let lmdb = |doing: &'static str| move |error| map_error(path, doing, error);
    let mut wtxn = env
        .write_txn()
        .map_err(lmdb("starting the opening transaction"))?;
    let meta: Option<Database<Bytes, Bytes>> = env
        .open_database(&wtxn, Some(table::META))
        .map_err(lmdb("opening the meta table"))?;
    let tables = match meta {
        None => create(env, &mut wtxn, path, serial)?,
        Some(meta) => {
            check_format(&wtxn, meta, path, serial)?;
            check_table_names(env, &wtxn, path)?;
            let open = |name: &str| -> Result<Database<Bytes, Bytes>, SyneviError> {
                env.open_database(&wtxn, Some(name))
                    .map_err(lmdb("opening a table"))?
                    .ok_or_else(|| corrupt(path, format!("the table {name:?} is missing")))
            };
            Tables {
                meta,
                transactions: open(table::TRANSACTIONS)?,
                forgotten: open(table::FORGOTTEN)?,
                floors: open(table::FLOORS)?,
                events: open(table::EVENTS)?,
            }
        }
    };
    // Commit even when nothing was written: LMDB closes the handles of databases opened in
    // a transaction that aborts.
    wtxn.commit()
        .map_err(lmdb("committing the opening transaction"))?;
    Ok(tables)
}

/// Creates the tables and the format record, refusing an LMDB environment that holds data
/// of someone else.
fn create(
    env: &Env<WithoutTls>,
    wtxn: &mut RwTxn,
    path: &Path,
    serial: Serial,
) -> Result<Tables, SyneviError> {
    let names = table_names(env, wtxn, path)?;
    if !names.is_empty() {
        return Err(corrupt(
            path,
            format!(
                "an LMDB environment without a synevi format record (it holds {})",
                names.join(", ")
            ),
        ));
    }
    let mut create = |name: &str| {
        env.create_database::<Bytes, Bytes>(wtxn, Some(name))
            .map_err(|error| map_error(path, "creating a table", error))
    };
    let tables = Tables {
        meta: create(table::META)?,
        transactions: create(table::TRANSACTIONS)?,
        forgotten: create(table::FORGOTTEN)?,
        floors: create(table::FLOORS)?,
        events: create(table::EVENTS)?,
    };
    let record = FormatRecord {
        version: FORMAT_VERSION,
        serial,
    };
    tables
        .meta
        .put(wtxn, KEY_FORMAT, &record.encode())
        .map_err(|error| map_error(path, "writing the format record", error))?;
    Ok(tables)
}

fn check_format(
    wtxn: &RwTxn,
    meta: Database<Bytes, Bytes>,
    path: &Path,
    serial: Serial,
) -> Result<(), SyneviError> {
    let bytes = meta
        .get(wtxn, KEY_FORMAT)
        .map_err(|error| map_error(path, "reading the format record", error))?
        .ok_or_else(|| corrupt(path, "the meta table has no format record"))?;
    let record = FormatRecord::decode(bytes).map_err(|reason| corrupt(path, reason))?;
    if record.version != FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!(
                "the store is in format version {}, this build of synevi reads version \
                 {FORMAT_VERSION}",
                record.version
            ),
        ));
    }
    if record.serial != serial {
        return Err(SyneviError::WrongNode {
            expected: serial,
            found: record.serial,
        });
    }
    Ok(())
}

/// Refuses an environment with tables a synevi store does not have.
fn check_table_names(env: &Env<WithoutTls>, wtxn: &RwTxn, path: &Path) -> Result<(), SyneviError> {
    let names = table_names(env, wtxn, path)?;
    match names
        .iter()
        .find(|name| !table::ALL.contains(&name.as_str()))
    {
        Some(name) => Err(corrupt(
            path,
            format!("the environment holds a table {name:?} that a synevi store does not have"),
        )),
        None => Ok(()),
    }
}

/// The names in LMDB's unnamed database, which lists the named databases (and, in foreign
/// environments, may hold plain data).
fn table_names(
    env: &Env<WithoutTls>,
    wtxn: &RwTxn,
    path: &Path,
) -> Result<Vec<String>, SyneviError> {
    let lmdb = |error| map_error(path, "listing the tables", error);
    let Some(main) = env
        .open_database::<Bytes, Bytes>(wtxn, None)
        .map_err(lmdb)?
    else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for entry in main.iter(wtxn).map_err(lmdb)? {
        let (name, _) = entry.map_err(lmdb)?;
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(names)
}
