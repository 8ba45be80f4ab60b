//! Rows → records: what the DiffActor does for every changed row.
//!
//! [`RowMapper::new`] checks a validated [`Mapping`] against the source's columns once (every
//! mapped column exists and has a usable type) and precomputes a plan: which column plays which
//! role, and every property name after renames. Per row, [`RowMapper::encode_upsert`] then
//! builds the record, validates it with the very rules the receiver enforces
//! ([`validate_event`], [`validate_profile_update`]), serializes it once, and returns the bytes
//! with their routing hash. A row that cannot become a valid record yields a [`RowError`]; it
//! never stops the run.
//!
//! Event properties are assembled in this order, later steps winning on a name conflict:
//! 1. the keys of the JSON properties column (flattened one level),
//! 2. every other column that is neither mapped to a role nor excluded, renamed where asked,
//! 3. the mapped roles: `time` (epoch milliseconds), `distinct_id`, `$user_id`, `$device_id`,
//!    `$insert_id`,
//! 4. the hidden import properties (`$warehouse_*`, `$import`, `$source`).
//!
//! So a column always beats a same-named key inside the JSON column, and no data can overwrite
//! what Ferry derives. NULL columns are left out of events (an absent property and a null one
//! are the same to Mixpanel's queries).
//!
//! Profiles: a row gives a `$set` of its non-NULL columns and the list of properties whose
//! column is NULL ([`MappedProfile`]). Whether those become a `$unset` is the caller's call,
//! through [`Unset`]: Full, Append and One-time send `$set` only ([`Unset::Never`]: a NULL never
//! erases a value set by someone else); Mirror sends `$unset` for columns that became NULL
//! ([`Unset::PreviouslySet`] with the previous row, or [`Unset::AllNull`] when the previous row
//! is not at hand: unsetting an absent property is harmless). Updates carry `$ignore_time`
//! (a sync is not user activity) and `$ip: 0` (no geolocation from Ferry's own address).

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use crate::checksum::row_checksum;
use crate::ingest::event::{validate_event, EventRules};
use crate::ingest::limits::MAX_RECORD_BYTES;
use crate::ingest::profile::{validate_profile_update, ProfileKind};
use crate::insert_id::{insert_id_from_checksum, insert_id_from_key};
use crate::spec::{
    EventName, HistoryOf, Mapping, Problems, SpecErrors, SyncSpec, Target, TimeSpec, TimeUnit,
    RESERVED_COLUMNS,
};
use crate::value::{column_index, iso_utc, Column, ColumnKind, Value};

/// One row that could not become a valid record. `row` is the row's position in what the
/// source streamed for this run; `key` its key values (`|`-joined) when key columns are mapped;
/// `field` the column or record field at fault.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("row {row}{}: {field}: {message}", key.as_ref().map(|k| format!(" (key {k})")).unwrap_or_default())]
pub struct RowError {
    pub row: u64,
    pub key: Option<String>,
    pub field: String,
    pub message: String,
}

/// The endpoint a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// `/import` (events and profile-history events).
    Event,
    /// `/engage`.
    UserProfile,
    /// `/groups`.
    GroupProfile,
    /// A Mirror delete of an event: the event as it was sent, for the bundled receiver's
    /// `/ferry/v1/events/delete` (Mixpanel's public API has no per-event delete).
    EventDelete,
}

/// A record ready to batch: its JSON, serialized once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    pub kind: RecordKind,
    pub json: Vec<u8>,
    /// Stable hash of the distinct id (or group key and id) for choosing a shard, so all the
    /// records of one profile go through one shard, in order.
    pub route_hash: u64,
    /// Events only.
    pub insert_id: Option<String>,
}

/// Run-level facts stamped on events as Mixpanel's hidden warehouse-import properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportContext {
    /// `$warehouse_type`: `postgres`, `sqlite`, …
    pub warehouse_type: String,
    /// `$warehouse_table`.
    pub table: String,
    /// `$warehouse_import_id`: the run's import id.
    pub import_id: String,
    /// `$warehouse_import_job_id`, when set: the sync's id, so all its runs can be found.
    pub import_job_id: Option<String>,
    /// `$warehouse_import_run_id`, when set.
    pub import_run_id: Option<String>,
    /// `$token` of profile updates, when the tenant has a project token.
    pub token: Option<String>,
}

/// Whether a profile row's NULL columns become a `$unset`.
#[derive(Debug, Clone, Copy)]
pub enum Unset<'a> {
    /// `$set` of the non-NULL columns only (Full, Append, One-time, and Mirror inserts).
    Never,
    /// Also `$unset` every property whose column is NULL.
    AllNull,
    /// Also `$unset` the properties whose column is NULL now and was not in this previous
    /// version of the row (same columns, same order).
    PreviouslySet(&'a [Value]),
}

/// Whom a profile row is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileId {
    User { distinct_id: String },
    Group { group_key: String, group_id: String },
}

/// A profile row, mapped but not yet an update.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedProfile {
    pub id: ProfileId,
    /// Non-NULL columns as properties.
    pub set: Map<String, Json>,
    /// Properties whose column is NULL, with the column's index.
    pub null_properties: Vec<(usize, String)>,
}

/// Roles a column can play besides being a property.
#[derive(Debug, Clone)]
struct Plan {
    /// (column index, property name) for ordinary property columns.
    properties: Vec<(usize, String)>,
    event_name: Option<PlanName>,
    time: Option<(usize, TimeUnit)>,
    distinct_id: Option<usize>,
    user_id: Option<usize>,
    device_id: Option<usize>,
    group: Option<(String, usize)>,
    properties_column: Option<usize>,
    key_columns: Vec<usize>,
}

#[derive(Debug, Clone)]
enum PlanName {
    Static(String),
    Column(usize),
}

/// Maps and encodes the rows of one sync's result set. Build one per run (or per schema).
#[derive(Debug, Clone)]
pub struct RowMapper {
    sync_id: String,
    kind: MapperKind,
    plan: Plan,
    strict: bool,
    rules: EventRules,
    hidden: Vec<(&'static str, Json)>,
    token: Option<String>,
    column_names: Vec<String>,
    /// Deleted event rows become [`RecordKind::EventDelete`] records (the destination can
    /// delete events); otherwise they are refused as not applied.
    event_deletes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapperKind {
    Events,
    History,
    Users,
    Groups,
}

impl RowMapper {
    /// Checks `mapping` (from `sync.validate()`) against `columns` and prepares the plan.
    /// Lookup tables are written by [`LookupCsvWriter`] instead.
    pub fn new(
        sync: &SyncSpec,
        mapping: &Mapping,
        columns: &[Column],
        ctx: &ImportContext,
    ) -> Result<Self, SpecErrors> {
        let mut p = Problems::default();
        let mut checker = ColumnChecker::new(columns, &mut p);
        checker.reserved();
        if let Some(cursor) = &sync.cursor_column {
            checker.find("sync.cursor_column", cursor);
        }
        let kind;
        let mut plan = Plan {
            properties: Vec::new(),
            event_name: None,
            time: None,
            distinct_id: None,
            user_id: None,
            device_id: None,
            group: None,
            properties_column: None,
            key_columns: Vec::new(),
        };
        match &mapping.target {
            Target::Events {
                event_name,
                time,
                distinct_id_column,
                user_id_column,
                device_id_column,
            } => {
                kind = MapperKind::Events;
                plan.event_name = match event_name {
                    EventName::Static(name) => Some(PlanName::Static(name.clone())),
                    EventName::Column(col) => checker
                        .id_column("sync.mapping.event_name_column", col)
                        .map(PlanName::Column),
                };
                plan.time = checker.time_column(time);
                plan.distinct_id = distinct_id_column
                    .as_ref()
                    .and_then(|c| checker.id_column("sync.mapping.distinct_id_column", c));
                plan.user_id = user_id_column
                    .as_ref()
                    .and_then(|c| checker.id_column("sync.mapping.user_id_column", c));
                plan.device_id = device_id_column
                    .as_ref()
                    .and_then(|c| checker.id_column("sync.mapping.device_id_column", c));
            }
            Target::ProfileHistory {
                event_name,
                profile,
                time,
            } => {
                kind = MapperKind::History;
                plan.event_name = Some(PlanName::Static(event_name.clone()));
                plan.time = checker.time_column(time);
                match profile {
                    HistoryOf::User { distinct_id_column } => {
                        plan.distinct_id = checker
                            .id_column("sync.mapping.distinct_id_column", distinct_id_column);
                    }
                    // A group's history event carries the group id as its distinct id and under
                    // the group key, as group analytics attributes events to groups.
                    HistoryOf::Group {
                        group_key,
                        group_id_column,
                    } => {
                        plan.distinct_id =
                            checker.id_column("sync.mapping.group_id_column", group_id_column);
                        plan.group = plan.distinct_id.map(|i| (group_key.clone(), i));
                    }
                }
            }
            Target::UserProfiles { distinct_id_column } => {
                kind = MapperKind::Users;
                plan.distinct_id =
                    checker.id_column("sync.mapping.distinct_id_column", distinct_id_column);
            }
            Target::GroupProfiles {
                group_key,
                group_id_column,
            } => {
                kind = MapperKind::Groups;
                plan.group = checker
                    .id_column("sync.mapping.group_id_column", group_id_column)
                    .map(|i| (group_key.clone(), i));
            }
            Target::LookupTable { .. } => {
                checker.problems.add(
                    "sync.table_type",
                    "lookup tables are written as CSV by LookupCsvWriter, not mapped row by row",
                );
                kind = MapperKind::Events;
            }
        }
        if let Some(col) = &mapping.properties_column {
            plan.properties_column = checker.find("sync.mapping.properties_column", col);
            if let Some(i) = plan.properties_column {
                if !matches!(columns[i].kind, ColumnKind::Json | ColumnKind::Text) {
                    checker.problems.add(
                        "sync.mapping.properties_column",
                        format!(
                            "column '{col}' is {}; it must hold a JSON object (json or text)",
                            columns[i].kind.name()
                        ),
                    );
                }
            }
        }
        plan.key_columns = mapping
            .key_columns
            .iter()
            .filter_map(|k| checker.find("sync.mapping.key_columns", k))
            .collect();
        for c in &mapping.excludes {
            checker.find("sync.mapping.excludes", c);
        }
        for c in mapping.renames.keys() {
            checker.find(&format!("sync.mapping.renames.{c}"), c);
        }

        let mut roles: HashSet<usize> = [
            plan.time.map(|t| t.0),
            plan.distinct_id,
            plan.user_id,
            plan.device_id,
            plan.group.as_ref().map(|g| g.1),
            plan.properties_column,
            match plan.event_name {
                Some(PlanName::Column(i)) => Some(i),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .collect();
        for (i, col) in columns.iter().enumerate() {
            if mapping.excludes.contains(&col.name) {
                roles.insert(i);
            }
        }
        plan.properties = columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !roles.contains(i))
            .map(|(i, c)| {
                let name = mapping.renames.get(&c.name).unwrap_or(&c.name).clone();
                (i, name)
            })
            .collect();
        if kind == MapperKind::History {
            for (i, name) in &plan.properties {
                if matches!(columns[*i].kind, ColumnKind::Json | ColumnKind::Array) {
                    p.add(
                        "sync.mapping.excludes",
                        format!("column '{}' ({name}) is {}: profile history does not support lists or objects; exclude it", columns[*i].name, columns[*i].kind.name()),
                    );
                }
            }
        }

        let mut hidden: Vec<(&'static str, Json)> = vec![
            ("$import", Json::Bool(true)),
            ("$source", Json::from("warehouse-import")),
            ("$warehouse_type", Json::from(ctx.warehouse_type.as_str())),
            ("$warehouse_import_id", Json::from(ctx.import_id.as_str())),
            ("$warehouse_table", Json::from(ctx.table.as_str())),
        ];
        if let Some(job) = &ctx.import_job_id {
            hidden.push(("$warehouse_import_job_id", Json::from(job.as_str())));
        }
        if let Some(run) = &ctx.import_run_id {
            hidden.push(("$warehouse_import_run_id", Json::from(run.as_str())));
        }
        p.finish(Self {
            sync_id: sync.id.clone(),
            kind,
            plan,
            strict: sync.strict,
            rules: EventRules::default(),
            hidden,
            token: ctx.token.clone(),
            column_names: columns.iter().map(|c| c.name.clone()).collect(),
            event_deletes: false,
        })
    }

    /// Lets [`Self::encode_delete`] encode deleted events for a destination that can delete
    /// them (the bundled receiver).
    pub fn with_event_deletes(mut self, supported: bool) -> Self {
        self.event_deletes = supported;
        self
    }

    /// Whether deleted events become records (see [`Self::with_event_deletes`]).
    pub fn event_deletes(&self) -> bool {
        self.event_deletes
    }

    /// Whether this mapper's deletes are events (which need [`Self::with_event_deletes`]).
    pub fn deletes_events(&self) -> bool {
        matches!(self.kind, MapperKind::Events | MapperKind::History)
    }

    /// The endpoint this mapper's records go to.
    pub fn record_kind(&self) -> RecordKind {
        match self.kind {
            MapperKind::Events | MapperKind::History => RecordKind::Event,
            MapperKind::Users => RecordKind::UserProfile,
            MapperKind::Groups => RecordKind::GroupProfile,
        }
    }

    /// The `$insert_id` of a row: from its key columns, else from its checksum.
    pub fn insert_id(&self, row: &[Value]) -> String {
        if self.plan.key_columns.is_empty() {
            insert_id_from_checksum(&self.sync_id, &row_checksum(row))
        } else {
            insert_id_from_key(
                &self.sync_id,
                self.plan.key_columns.iter().map(|&i| cell(row, i)),
            )
        }
    }

    /// Maps an events (or profile-history) row to `{"event", "properties"}`, unvalidated.
    pub fn map_event(&self, row_index: u64, row: &[Value]) -> Result<Json, RowError> {
        let mut parsed = None;
        let gathered = self.gather_event(row_index, row, &mut parsed)?;
        // Inserted in order: a later property wins a name conflict.
        let mut props = Map::new();
        for entry in gathered.props {
            props.insert(entry.key.to_owned(), entry.value.into_json());
        }
        let mut event = Map::new();
        event.insert("event".into(), Json::String(gathered.name.into_owned()));
        event.insert("properties".into(), Json::Object(props));
        Ok(Json::Object(event))
    }

    /// An event row's properties in the order the module docs give (of two with one name, the
    /// later is the property), and its event name. `parsed` holds a JSON properties column
    /// that arrived as text, for the properties to borrow from.
    fn gather_event<'a>(
        &'a self,
        row_index: u64,
        row: &'a [Value],
        parsed: &'a mut Option<Map<String, Json>>,
    ) -> Result<GatheredEvent<'a>, RowError> {
        let plan = &self.plan;
        let mut props = Vec::with_capacity(plan.properties.len() + 24);
        if let Some(i) = plan.properties_column {
            self.flatten_json(row_index, row, i, parsed, &mut props)?;
        }
        for (i, name) in &plan.properties {
            let value = cell(row, *i);
            if value.is_null() {
                continue;
            }
            if self.kind == MapperKind::History {
                let nested = match value {
                    Value::Array(_) | Value::Json(Json::Array(_) | Json::Object(_)) => true,
                    Value::JsonText(t) => t.as_str().trim_start().starts_with(['[', '{']),
                    _ => false,
                };
                if nested {
                    return Err(self.row_error(
                        row_index,
                        row,
                        &self.column_names[*i],
                        "profile history does not support lists or objects",
                    ));
                }
            }
            push_prop(&mut props, name, Prop::Cell(value));
        }
        if let Some((i, unit)) = plan.time {
            let ms = time_millis(cell(row, i), unit)
                .map_err(|m| self.row_error(row_index, row, &self.column_names[i], &m))?;
            push_prop(&mut props, "time", Prop::Int(ms));
        }
        for (slot, name) in [
            (plan.distinct_id, "distinct_id"),
            (plan.user_id, "$user_id"),
            (plan.device_id, "$device_id"),
        ] {
            if let Some(i) = slot {
                if let Some(id) = cell(row, i).to_id_string() {
                    push_prop(&mut props, name, Prop::Str(id));
                }
            }
        }
        if let (MapperKind::History, Some((group_key, i))) = (self.kind, &plan.group) {
            if let Some(id) = cell(row, *i).to_id_string() {
                push_prop(&mut props, group_key, Prop::Str(id));
            }
        }
        push_prop(&mut props, "$insert_id", Prop::Str(self.insert_id(row)));
        for (name, value) in &self.hidden {
            push_prop(&mut props, name, Prop::Json(value));
        }
        let name = match &plan.event_name {
            Some(PlanName::Static(name)) => Cow::Borrowed(name.as_str()),
            Some(PlanName::Column(i)) => {
                Cow::Owned(cell(row, *i).to_id_string().ok_or_else(|| {
                    self.row_error(
                        row_index,
                        row,
                        &self.column_names[*i],
                        "the event name is NULL or not text",
                    )
                })?)
            }
            None => Cow::Borrowed(""),
        };
        Ok(GatheredEvent { props, name })
    }

    /// Maps a profile row to its id, `$set` and NULL properties.
    pub fn map_profile(&self, row_index: u64, row: &[Value]) -> Result<MappedProfile, RowError> {
        let plan = &self.plan;
        let id = if let Some((key, i)) = &plan.group {
            ProfileId::Group {
                group_key: key.clone(),
                group_id: self.required_id(row_index, row, *i)?,
            }
        } else if let Some(i) = plan.distinct_id {
            ProfileId::User {
                distinct_id: self.required_id(row_index, row, i)?,
            }
        } else {
            return Err(self.row_error(row_index, row, "mapping", "not a profile mapping"));
        };
        let mut set = Map::new();
        if let Some(i) = plan.properties_column {
            let mut parsed = None;
            let mut entries = Vec::new();
            self.flatten_json(row_index, row, i, &mut parsed, &mut entries)?;
            for entry in entries {
                set.insert(entry.key.to_owned(), entry.value.into_json());
            }
        }
        let mut null_properties = Vec::new();
        for (i, name) in &plan.properties {
            match cell(row, *i) {
                Value::Null => null_properties.push((*i, name.clone())),
                value => {
                    set.insert(name.clone(), value.to_property());
                }
            }
        }
        Ok(MappedProfile {
            id,
            set,
            null_properties,
        })
    }

    /// Encodes an inserted or updated row into `out` (one event; or a profile's `$set` and,
    /// per `unset`, a `$unset`). Nothing is pushed when the row fails.
    pub fn encode_upsert(
        &self,
        row_index: u64,
        row: &[Value],
        unset: Unset<'_>,
        now_ms: i64,
        out: &mut Vec<EncodedRecord>,
    ) -> Result<(), RowError> {
        match self.kind {
            MapperKind::Events | MapperKind::History => {
                let record = self.encode_event(row_index, row, now_ms)?;
                out.push(record);
                Ok(())
            }
            MapperKind::Users | MapperKind::Groups => {
                let profile = self.map_profile(row_index, row)?;
                let unset_names: Vec<Json> = match unset {
                    Unset::Never => Vec::new(),
                    Unset::AllNull => profile
                        .null_properties
                        .iter()
                        .map(|(_, n)| Json::String(n.clone()))
                        .collect(),
                    Unset::PreviouslySet(previous) => profile
                        .null_properties
                        .iter()
                        .filter(|(i, _)| !cell(previous, *i).is_null())
                        .map(|(_, n)| Json::String(n.clone()))
                        .collect(),
                };
                let start = out.len();
                let route = route_hash(&profile.id);
                let mut push = |op: &str, arg: Json| -> Result<(), RowError> {
                    let record =
                        self.encode_profile(row_index, row, &profile.id, op, arg, route)?;
                    out.push(record);
                    Ok(())
                };
                let mut result = Ok(());
                if !profile.set.is_empty() {
                    result = push("$set", Json::Object(profile.set.clone()));
                }
                if result.is_ok() && !unset_names.is_empty() {
                    result = push("$unset", Json::Array(unset_names));
                }
                if result.is_err() {
                    out.truncate(start);
                }
                result
            }
        }
    }

    /// Encodes a deleted row: a profile's `$delete`; an event (or history event) as it was
    /// sent, as a [`RecordKind::EventDelete`] when the destination can delete events (see
    /// [`Self::with_event_deletes`]). Otherwise Mixpanel's public API has no per-event delete,
    /// and that is reported as a per-row error ("not applied").
    pub fn encode_delete(
        &self,
        row_index: u64,
        row: &[Value],
        out: &mut Vec<EncodedRecord>,
    ) -> Result<(), RowError> {
        match self.kind {
            MapperKind::Events | MapperKind::History if self.event_deletes => {
                // The time window does not apply to deleting what was stored.
                let mut record = self.encode_event(row_index, row, i64::MAX / 4)?;
                record.kind = RecordKind::EventDelete;
                out.push(record);
                Ok(())
            }
            MapperKind::Events | MapperKind::History => Err(self.row_error(
                row_index,
                row,
                "change",
                "delete not applied: Mixpanel's public API has no per-event delete",
            )),
            MapperKind::Users | MapperKind::Groups => {
                let profile = self.map_profile(row_index, row)?;
                let route = route_hash(&profile.id);
                let record = self.encode_profile(
                    row_index,
                    row,
                    &profile.id,
                    "$delete",
                    Json::String(String::new()),
                    route,
                )?;
                out.push(record);
                Ok(())
            }
        }
    }

    fn encode_event(
        &self,
        row_index: u64,
        row: &[Value],
        now_ms: i64,
    ) -> Result<EncodedRecord, RowError> {
        // Same bytes, without building the event as a JSON object; it steps aside for every
        // row that validation would refuse or change.
        if let Some(record) = self.encode_event_direct(row, now_ms) {
            return Ok(record);
        }
        self.encode_event_general(row_index, row, now_ms)
    }

    /// The definition of an encoded event: mapped, validated by the receiver's rules,
    /// serialized.
    fn encode_event_general(
        &self,
        row_index: u64,
        row: &[Value],
        now_ms: i64,
    ) -> Result<EncodedRecord, RowError> {
        let mut event = self.map_event(row_index, row)?;
        // The size is checked on the serialized bytes below, so validation gets 0 here.
        let accepted = validate_event(&mut event, 0, &self.rules, now_ms)
            .map_err(|e| self.row_error(row_index, row, &e.field, &e.message))?;
        let json = self.serialize(row_index, row, &event)?;
        Ok(EncodedRecord {
            kind: RecordKind::Event,
            json,
            route_hash: xxhash_rust::xxh3::xxh3_64(accepted.key.distinct_id.as_bytes()),
            insert_id: Some(accepted.key.insert_id),
        })
    }

    fn encode_profile(
        &self,
        row_index: u64,
        row: &[Value],
        id: &ProfileId,
        op: &str,
        arg: Json,
        route_hash: u64,
    ) -> Result<EncodedRecord, RowError> {
        let mut update = Map::new();
        if let Some(token) = &self.token {
            update.insert("$token".into(), Json::String(token.clone()));
        }
        let kind = match id {
            ProfileId::User { distinct_id } => {
                update.insert("$distinct_id".into(), Json::String(distinct_id.clone()));
                ProfileKind::User
            }
            ProfileId::Group {
                group_key,
                group_id,
            } => {
                update.insert("$group_key".into(), Json::String(group_key.clone()));
                update.insert("$group_id".into(), Json::String(group_id.clone()));
                ProfileKind::Group
            }
        };
        update.insert("$ignore_time".into(), Json::Bool(true));
        update.insert("$ip".into(), Json::from(0));
        update.insert(op.into(), arg);
        let update = Json::Object(update);
        validate_profile_update(&update, 0, kind)
            .map_err(|e| self.row_error(row_index, row, &e.field, &e.message))?;
        let json = self.serialize(row_index, row, &update)?;
        Ok(EncodedRecord {
            kind: if kind == ProfileKind::User {
                RecordKind::UserProfile
            } else {
                RecordKind::GroupProfile
            },
            json,
            route_hash,
            insert_id: None,
        })
    }

    fn serialize(&self, row_index: u64, row: &[Value], record: &Json) -> Result<Vec<u8>, RowError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| self.row_error(row_index, row, "record", &e.to_string()))?;
        if json.len() >= MAX_RECORD_BYTES {
            return Err(self.row_error(
                row_index,
                row,
                "record",
                &format!(
                    "the record is {} bytes; it must be smaller than {MAX_RECORD_BYTES}",
                    json.len()
                ),
            ));
        }
        Ok(json)
    }

    fn flatten_json<'a>(
        &'a self,
        row_index: u64,
        row: &'a [Value],
        i: usize,
        parsed: &'a mut Option<Map<String, Json>>,
        props: &mut Vec<PropEntry<'a>>,
    ) -> Result<(), RowError> {
        let object = match cell(row, i) {
            Value::Null => return Ok(()),
            Value::Json(Json::Object(map)) => map,
            Value::JsonText(text) => match raw_json::object_entries(text.as_str()) {
                Some(entries) => {
                    for (k, v) in entries {
                        push_prop(props, k, Prop::Raw(v));
                    }
                    return Ok(());
                }
                // Not an object, or a key with escapes to decode: the tree decides.
                None => match text.to_json() {
                    Json::Object(map) => &*parsed.insert(map),
                    _ => return self.malformed_json(row_index, row, i, props),
                },
            },
            Value::Text(text) => match serde_json::from_str::<Json>(text) {
                Ok(Json::Object(map)) => &*parsed.insert(map),
                _ => return self.malformed_json(row_index, row, i, props),
            },
            _ => return self.malformed_json(row_index, row, i, props),
        };
        for (k, v) in object {
            push_prop(props, k, Prop::Json(v));
        }
        Ok(())
    }

    /// Strict: a per-row error. Lenient: the raw value is kept under the column's name.
    fn malformed_json<'a>(
        &'a self,
        row_index: u64,
        row: &'a [Value],
        i: usize,
        props: &mut Vec<PropEntry<'a>>,
    ) -> Result<(), RowError> {
        let name = &self.column_names[i];
        if self.strict {
            return Err(self.row_error(
                row_index,
                row,
                name,
                "the properties column does not hold a JSON object",
            ));
        }
        push_prop(props, name, Prop::Cell(cell(row, i)));
        Ok(())
    }

    fn required_id(&self, row_index: u64, row: &[Value], i: usize) -> Result<String, RowError> {
        cell(row, i).to_id_string().ok_or_else(|| {
            self.row_error(
                row_index,
                row,
                &self.column_names[i],
                "the id is NULL or not a scalar",
            )
        })
    }

    /// Builds a row error; the key text is only computed here, on the failure path.
    fn row_error(&self, row_index: u64, row: &[Value], field: &str, message: &str) -> RowError {
        let key = (!self.plan.key_columns.is_empty()).then(|| {
            self.plan
                .key_columns
                .iter()
                .map(|&i| cell(row, i).to_id_string().unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        });
        RowError {
            row: row_index,
            key,
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }
}

const NULL: Value = Value::Null;

/// A row's cell; a short row reads as NULL past its end.
fn cell(row: &[Value], i: usize) -> &Value {
    row.get(i).unwrap_or(&NULL)
}

fn route_hash(id: &ProfileId) -> u64 {
    match id {
        ProfileId::User { distinct_id } => xxhash_rust::xxh3::xxh3_64(distinct_id.as_bytes()),
        ProfileId::Group {
            group_key,
            group_id,
        } => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(group_key.as_bytes());
            h.update(&[0]);
            h.update(group_id.as_bytes());
            h.digest()
        }
    }
}

/// An event time in epoch milliseconds. Naive timestamps and dates are read as UTC; numbers by
/// `unit`; text as a number, RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` (UTC) or `YYYY-MM-DD`.
pub fn time_millis(value: &Value, unit: TimeUnit) -> Result<i64, String> {
    let from_number = |n: f64| -> Result<i64, String> {
        if !n.is_finite() {
            return Err(format!("time {n} is not a finite number"));
        }
        let per_ms = match unit {
            TimeUnit::Seconds => 0.001,
            TimeUnit::Milliseconds => 1.0,
            TimeUnit::Microseconds => 1000.0,
            TimeUnit::Auto if n.abs() < 1e11 => 0.001,
            TimeUnit::Auto if n.abs() < 1e14 => 1.0,
            TimeUnit::Auto => 1000.0,
        };
        let ms = (n / per_ms).floor();
        if ms.abs() > 9.0e15 {
            return Err(format!("time {n} is out of range"));
        }
        Ok(ms as i64)
    };
    match value {
        Value::Null => Err("the time is NULL".into()),
        Value::Timestamp(t) => Ok(t.timestamp_millis()),
        Value::TimestampNaive(t) => Ok(t.and_utc().timestamp_millis()),
        Value::Date(d) => Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()),
        Value::Int(i) => match unit {
            // Exact integer arithmetic where floats would round.
            TimeUnit::Seconds => i
                .checked_mul(1000)
                .ok_or_else(|| format!("time {i} is out of range")),
            TimeUnit::Milliseconds => Ok(*i),
            _ => from_number(*i as f64),
        },
        Value::Float(f) => from_number(*f),
        Value::Decimal(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("'{s}' is not a number"))
            .and_then(from_number),
        Value::Text(s) => parse_text_time(s.trim(), unit),
        other => Err(format!("a {} value cannot be a time", kind_name(other))),
    }
}

fn parse_text_time(s: &str, unit: TimeUnit) -> Result<i64, String> {
    if let Ok(n) = s.parse::<f64>() {
        return time_millis(&Value::Float(n), unit);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    Err(format!("'{s}' is not a time (expected epoch seconds/milliseconds, RFC 3339, or YYYY-MM-DD HH:MM:SS)"))
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "bool",
        Value::Int(_) => "integer",
        Value::Float(_) => "float",
        Value::Decimal(_) => "decimal",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Uuid(_) => "uuid",
        Value::Date(_) => "date",
        Value::Timestamp(_) | Value::TimestampNaive(_) => "timestamp",
        Value::Json(_) | Value::JsonText(_) => "json",
        Value::Array(_) => "array",
    }
}

/// Checks mapped columns against the result set's columns, collecting problems.
struct ColumnChecker<'a> {
    columns: &'a [Column],
    problems: &'a mut Problems,
}

impl<'a> ColumnChecker<'a> {
    fn new(columns: &'a [Column], problems: &'a mut Problems) -> Self {
        Self { columns, problems }
    }

    fn reserved(&mut self) {
        for c in self.columns {
            if RESERVED_COLUMNS.contains(&c.name.as_str()) {
                self.problems.add(
                    "sync.table",
                    format!(
                        "column '{}' has a name Ferry reserves for itself; rename it in a view",
                        c.name
                    ),
                );
            }
        }
    }

    fn find(&mut self, field: &str, name: &str) -> Option<usize> {
        let found = column_index(self.columns, name);
        if found.is_none() {
            let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            self.problems.add(
                field,
                format!(
                    "column '{name}' is not in the table (it has: {})",
                    names.join(", ")
                ),
            );
        }
        found
    }

    /// A column whose values are used as identifiers or names.
    fn id_column(&mut self, field: &str, name: &str) -> Option<usize> {
        let i = self.find(field, name)?;
        let kind = &self.columns[i].kind;
        if matches!(
            kind,
            ColumnKind::Json | ColumnKind::Array | ColumnKind::Bytes | ColumnKind::Float
        ) {
            self.problems.add(
                field,
                format!(
                    "column '{name}' is {}; an id or name must be text, integer, uuid or decimal",
                    kind.name()
                ),
            );
        }
        Some(i)
    }

    fn time_column(&mut self, time: &TimeSpec) -> Option<(usize, TimeUnit)> {
        let field = "sync.mapping.time_column";
        let i = self.find(field, &time.column)?;
        let kind = &self.columns[i].kind;
        let numeric = matches!(
            kind,
            ColumnKind::Int | ColumnKind::Float | ColumnKind::Decimal
        );
        let usable = numeric
            || matches!(
                kind,
                ColumnKind::Timestamp
                    | ColumnKind::TimestampNaive
                    | ColumnKind::Date
                    | ColumnKind::Text
            );
        if !usable {
            self.problems.add(
                field,
                format!("column '{}' is {}; a time column must be a timestamp, a date or epoch seconds/milliseconds", time.column, kind.name()),
            );
        } else if time.unit != TimeUnit::Auto && !(numeric || *kind == ColumnKind::Text) {
            self.problems.add(
                "sync.mapping.time_unit",
                format!(
                    "column '{}' is {}; time_unit applies to numeric epoch columns only",
                    time.column,
                    kind.name()
                ),
            );
        }
        Some((i, time.unit))
    }
}

// ---------------------------------------------------------------------------------------------
// Lookup tables

/// Writes a lookup table's rows as the CSV Mixpanel expects: RFC 4180, header first, the key
/// column first, values printed so that Mixpanel types them back: numbers as numbers,
/// timestamps RFC 3339 (UTC), booleans `true`/`false`, lists as `["a","b"]` (elements as text),
/// NULL as an empty cell (undefined). Text is written as is, so a text cell holding `42` or
/// `true` is typed as a number or boolean by Mixpanel too.
pub struct LookupCsvWriter {
    writer: csv::Writer<Vec<u8>>,
    /// Column indexes in CSV order (key first).
    order: Vec<usize>,
    key_column: usize,
    keys: HashSet<String>,
    rows: u64,
    scratch: Vec<String>,
}

impl LookupCsvWriter {
    /// Checks the mapping against `columns` and writes the header.
    pub fn new(mapping: &Mapping, columns: &[Column]) -> Result<Self, SpecErrors> {
        let mut p = Problems::default();
        let Target::LookupTable { key_column, .. } = &mapping.target else {
            p.add("sync.table_type", "not a lookup table mapping");
            return Err(p.finish(()).err().unwrap_or(SpecErrors(Vec::new())));
        };
        let mut checker = ColumnChecker::new(columns, &mut p);
        checker.reserved();
        let key = checker.id_column("sync.mapping.key_column", key_column);
        for c in &mapping.excludes {
            checker.find("sync.mapping.excludes", c);
        }
        if mapping.excludes.contains(key_column) {
            p.add(
                "sync.mapping.excludes",
                format!("the key column '{key_column}' cannot be excluded"),
            );
        }
        let mut order = Vec::new();
        if let Some(k) = key {
            order.push(k);
            order.extend(
                (0..columns.len())
                    .filter(|&i| i != k && !mapping.excludes.contains(&columns[i].name)),
            );
        }
        let header: Vec<&str> = order
            .iter()
            .map(|&i| {
                let name = &columns[i].name;
                mapping.renames.get(name).unwrap_or(name).as_str()
            })
            .collect();
        if key.is_some() && header.len() < 2 {
            p.add(
                "sync.mapping.excludes",
                "a lookup table needs the key and at least one more column",
            );
        }
        let mut seen = HashSet::new();
        for name in &header {
            if !seen.insert(*name) {
                p.add(
                    "sync.mapping.renames",
                    format!("two columns would both be called '{name}'"),
                );
            }
        }
        let mut writer = csv::Writer::from_writer(Vec::new());
        if let Err(e) = writer.write_record(&header) {
            p.add("sync.mapping", format!("cannot write the CSV header: {e}"));
        }
        p.finish(Self {
            writer,
            order,
            key_column: key.unwrap_or(0),
            keys: HashSet::new(),
            rows: 0,
            scratch: Vec::new(),
        })
    }

    /// Appends one row. A NULL, blank or duplicate key refuses the row (Mixpanel would refuse
    /// the whole table).
    pub fn write_row(&mut self, row_index: u64, row: &[Value]) -> Result<(), RowError> {
        let fail = |message: String| RowError {
            row: row_index,
            key: cell(row, self.key_column).to_id_string(),
            field: "key_column".into(),
            message,
        };
        let key = match cell(row, self.key_column).to_id_string() {
            Some(k) if !k.trim().is_empty() => k,
            _ => return Err(fail("the key is NULL or blank".into())),
        };
        if self.keys.contains(&key) {
            return Err(fail(format!("duplicate key '{key}'")));
        }
        self.scratch.clear();
        for &i in &self.order {
            self.scratch.push(lookup_cell(cell(row, i)));
        }
        self.writer
            .write_record(&self.scratch)
            .map_err(|e| fail(format!("cannot write the row: {e}")))?;
        self.keys.insert(key);
        self.rows += 1;
        Ok(())
    }

    /// Data rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The CSV body.
    pub fn finish(self) -> Result<Vec<u8>, std::io::Error> {
        self.writer.into_inner().map_err(|e| e.into_error())
    }
}

/// One lookup-table cell's text.
fn lookup_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Float(f) if !f.is_finite() => String::new(),
        Value::Timestamp(t) => iso_utc(&t.naive_utc()),
        Value::TimestampNaive(t) => iso_utc(t),
        Value::Json(Json::String(s)) => s.clone(),
        Value::Json(j @ Json::Array(items)) if items.iter().all(Json::is_string) => j.to_string(),
        Value::Json(Json::Array(items)) => list_cell(items.iter().map(|j| match j {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })),
        Value::Json(other) => other.to_string(),
        Value::JsonText(t) => lookup_cell(&Value::Json(t.to_json())),
        Value::Array(items) => list_cell(items.iter().filter(|v| !v.is_null()).map(lookup_cell)),
        other => match other.to_property() {
            Json::String(s) => s,
            j => j.to_string(),
        },
    }
}

fn list_cell(items: impl Iterator<Item = String>) -> String {
    Json::Array(items.map(Json::String).collect()).to_string()
}

mod direct;
mod raw_json;

use direct::{push_prop, GatheredEvent, Prop, PropEntry};

#[cfg(test)]
mod tests;
