use super::*;
use crate::ingest::ids::check_insert_id;
use crate::ingest::lookup::parse_lookup_csv;
use crate::spec::SyncSpec;
use crate::Classify;
use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::json;

const NOW: i64 = 1_700_000_000_000;

fn ctx() -> ImportContext {
    ImportContext {
        warehouse_type: "postgres".into(),
        table: "public.orders".into(),
        import_id: "imp-1".into(),
        import_job_id: Some("orders".into()),
        import_run_id: None,
        token: Some("tok".into()),
    }
}

fn sync(table_type: &str, mode: &str, mapping: &str) -> SyncSpec {
    toml::from_str(&format!(
        "id='orders'\ntenant='acme'\nsource='pg'\ntable='public.orders'\ntable_type='{table_type}'\nmode='{mode}'\n[mapping]\n{mapping}"
    ))
    .unwrap()
}

fn mapper(spec: &SyncSpec, columns: &[Column]) -> RowMapper {
    let valid = spec.validate().unwrap();
    RowMapper::new(spec, &valid.mapping, columns, &ctx()).unwrap()
}

fn col(name: &str, kind: ColumnKind) -> Column {
    Column::new(name, kind)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn ts(s: &str) -> Value {
    Value::Timestamp(
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc),
    )
}

fn event_columns() -> Vec<Column> {
    vec![
        col("order_id", ColumnKind::Int),
        col("user_id", ColumnKind::Text),
        col("created_at", ColumnKind::Timestamp),
        col("amount_cents", ColumnKind::Int),
        col("note", ColumnKind::Text),
        col("extra", ColumnKind::Json),
        col("secret", ColumnKind::Text),
    ]
}

const EVENT_MAPPING: &str = r#"
event_name = "Order Placed"
time_column = "created_at"
distinct_id_column = "user_id"
properties_column = "extra"
key_columns = ["order_id"]
renames = { amount_cents = "Amount" }
excludes = ["secret"]
"#;

fn event_row() -> Vec<Value> {
    vec![
        Value::Int(42),
        text("u-1"),
        ts("2023-11-14T10:00:00.250+01:00"),
        Value::Int(1999),
        Value::Null,
        Value::Json(json!({"plan": "pro", "Amount": "from json", "time": 1, "nested": {"a": 1}})),
        text("do not send"),
    ]
}

fn decode(record: &EncodedRecord) -> Json {
    serde_json::from_slice(&record.json).unwrap()
}

#[test]
fn events_map_every_part() {
    let spec = sync("events", "mirror", EVENT_MAPPING);
    let m = mapper(&spec, &event_columns());
    let mut out = Vec::new();
    m.encode_upsert(0, &event_row(), Unset::Never, NOW, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1);
    let record = &out[0];
    assert_eq!(record.kind, RecordKind::Event);
    let insert_id = insert_id_from_key("orders", &[Value::Int(42)]);
    assert_eq!(record.insert_id.as_deref(), Some(insert_id.as_str()));
    assert_eq!(record.route_hash, xxhash_rust::xxh3::xxh3_64(b"u-1"));
    assert_eq!(
        decode(record),
        json!({
            "event": "Order Placed",
            "properties": {
                "time": 1_699_952_400_250i64,
                "distinct_id": "u-1",
                "$insert_id": insert_id,
                "order_id": 42,
                // Renamed column wins over the same key inside the JSON column.
                "Amount": 1999,
                "plan": "pro",
                "nested": {"a": 1},
                "$import": true,
                "$source": "warehouse-import",
                "$warehouse_type": "postgres",
                "$warehouse_import_id": "imp-1",
                "$warehouse_import_job_id": "orders",
                "$warehouse_table": "public.orders",
            }
        })
    );
    // Serialized once, compactly.
    assert!(!String::from_utf8_lossy(&record.json).contains(": "));
}

#[test]
fn event_name_from_a_column_and_user_device_ids() {
    let spec = sync(
        "events",
        "append'\ncursor_column='ts",
        "event_name_column='kind'\ntime_column='ts'\nuser_id_column='uid'\ndevice_id_column='dev'",
    );
    let columns = vec![
        col("kind", ColumnKind::Text),
        col("ts", ColumnKind::Int),
        col("uid", ColumnKind::Text),
        col("dev", ColumnKind::Uuid),
    ];
    let m = mapper(&spec, &columns);
    let dev = uuid::Uuid::from_u128(7);
    let mut out = Vec::new();
    m.encode_upsert(
        3,
        &[
            text("Signup"),
            Value::Int(1_600_000_000),
            Value::Null,
            Value::Uuid(dev),
        ],
        Unset::Never,
        NOW,
        &mut out,
    )
    .unwrap();
    let event = decode(&out[0]);
    assert_eq!(event["event"], "Signup");
    assert_eq!(event["properties"]["time"], 1_600_000_000_000i64);
    assert_eq!(event["properties"]["$device_id"], dev.to_string());
    // Validation's simplified-identity fallback filled distinct_id.
    assert_eq!(event["properties"]["distinct_id"], format!("$device:{dev}"));
    assert!(event["properties"].get("$user_id").is_none());

    // A NULL event name is a per-row error naming the column.
    let err = m
        .encode_upsert(
            4,
            &[
                Value::Null,
                Value::Int(1_600_000_000),
                text("u"),
                Value::Null,
            ],
            Unset::Never,
            NOW,
            &mut out,
        )
        .unwrap_err();
    assert_eq!((err.row, err.field.as_str()), (4, "kind"));
    assert_eq!(out.len(), 1, "nothing pushed for a failed row");
}

#[test]
fn time_units() {
    let d = NaiveDate::from_ymd_opt(2023, 11, 14).unwrap();
    let midnight = 1_699_920_000_000i64;
    assert_eq!(
        time_millis(&Value::Date(d), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(
            &Value::TimestampNaive(d.and_hms_milli_opt(0, 0, 1, 5).unwrap()),
            TimeUnit::Auto
        )
        .unwrap(),
        midnight + 1005
    );
    assert_eq!(
        time_millis(&ts("2023-11-14T01:00:00+01:00"), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&Value::Int(1_699_920_000), TimeUnit::Seconds).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&Value::Int(1_699_920_000), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&Value::Int(midnight), TimeUnit::Milliseconds).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&Value::Int(midnight), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&Value::Int(midnight * 1000 + 999), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&Value::Float(1_699_920_000.5), TimeUnit::Seconds).unwrap(),
        midnight + 500
    );
    // An explicit unit overrides the guess: 1e9 read as milliseconds.
    assert_eq!(
        time_millis(&Value::Int(1_000_000_000), TimeUnit::Milliseconds).unwrap(),
        1_000_000_000
    );
    assert_eq!(
        time_millis(&text("2023-11-14 00:00:00.5"), TimeUnit::Auto).unwrap(),
        midnight + 500
    );
    assert_eq!(
        time_millis(&text("2023-11-14T02:00:00+02:00"), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&text("2023-11-14"), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert_eq!(
        time_millis(&text("1699920000"), TimeUnit::Auto).unwrap(),
        midnight
    );
    assert!(time_millis(&text("yesterday"), TimeUnit::Auto).is_err());
    assert!(time_millis(&Value::Null, TimeUnit::Auto)
        .unwrap_err()
        .contains("NULL"));
    assert!(time_millis(&Value::Int(i64::MAX), TimeUnit::Seconds).is_err());
}

#[test]
fn invalid_rows_become_row_errors_from_core_validation() {
    let spec = sync("events", "mirror", EVENT_MAPPING);
    let m = mapper(&spec, &event_columns());
    let mut out = Vec::new();
    let mut row = event_row();
    row[1] = text("undefined");
    let err = m
        .encode_upsert(7, &row, Unset::Never, NOW, &mut out)
        .unwrap_err();
    assert_eq!(err.field, "properties.distinct_id");
    assert_eq!(err.key.as_deref(), Some("42"));
    assert_eq!(err.class(), crate::ErrorClass::PerRow);

    let mut row = event_row();
    row[2] = ts("2030-01-01T00:00:00Z");
    let err = m
        .encode_upsert(8, &row, Unset::Never, NOW, &mut out)
        .unwrap_err();
    assert_eq!(err.field, "properties.time");
    assert!(err.message.contains("future"));

    let mut row = event_row();
    row[5] = text("not json");
    let err = m
        .encode_upsert(9, &row, Unset::Never, NOW, &mut out)
        .unwrap_err();
    assert_eq!(err.field, "extra");
    assert!(out.is_empty());

    // Lenient syncs keep the malformed JSON as a plain property.
    let mut lenient = spec.clone();
    lenient.strict = false;
    let m = mapper(&lenient, &event_columns());
    m.encode_upsert(9, &row, Unset::Never, NOW, &mut out)
        .unwrap();
    assert_eq!(decode(&out[0])["properties"]["extra"], "not json");

    let err = m.encode_delete(10, &row, &mut out).unwrap_err();
    assert!(err.message.contains("not applied"));
}

#[test]
fn long_strings_are_truncated_by_validation_before_serializing() {
    let spec = sync("events", "mirror", EVENT_MAPPING);
    let m = mapper(&spec, &event_columns());
    let mut row = event_row();
    row[4] = text(&"x".repeat(300));
    let mut out = Vec::new();
    m.encode_upsert(0, &row, Unset::Never, NOW, &mut out)
        .unwrap();
    assert_eq!(
        decode(&out[0])["properties"]["note"]
            .as_str()
            .unwrap()
            .len(),
        255
    );
}

#[test]
fn keyless_events_take_their_insert_id_from_the_row_checksum() {
    let spec = sync(
        "events",
        "mirror",
        "event_name='e'\ntime_column='created_at'\ndistinct_id_column='user_id'",
    );
    let m = mapper(&spec, &event_columns());
    let row = event_row();
    let expected = insert_id_from_checksum("orders", &row_checksum(&row));
    assert_eq!(m.insert_id(&row), expected);
    assert!(check_insert_id(&expected).is_ok());
    let mut changed = row.clone();
    changed[3] = Value::Int(1);
    assert_ne!(m.insert_id(&changed), expected);
}

#[test]
fn column_problems_name_the_field() {
    let spec = sync(
        "events",
        "append'\ncursor_column='inserted",
        "event_name='e'\ntime_column='ts'\ndistinct_id_column='extra'\nexcludes=['nope']\nproperties_column='note'",
    );
    let valid = spec.validate().unwrap();
    let mut columns = event_columns();
    columns.push(col("_mp_row_hash", ColumnKind::Text));
    let err = RowMapper::new(&spec, &valid.mapping, &columns, &ctx()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sync.mapping.time_column: column 'ts' is not in the table"),
        "{text}"
    );
    assert!(err.mentions("sync.cursor_column"), "{text}");
    assert!(err.mentions("sync.mapping.distinct_id_column"), "{text}"); // json is no id
    assert!(err.mentions("sync.mapping.excludes"), "{text}");
    assert!(err.mentions("sync.table"), "{text}"); // reserved column
    assert!(
        !err.mentions("sync.mapping.properties_column"),
        "text may hold JSON: {text}"
    );

    let spec = sync(
        "events",
        "mirror",
        "event_name='e'\ntime_column='note'\ntime_unit='seconds'\ndistinct_id_column='user_id'",
    );
    let err = RowMapper::new(
        &spec,
        &spec.validate().unwrap().mapping,
        &event_columns(),
        &ctx(),
    );
    assert!(err.is_ok(), "text columns may hold epoch numbers");
    let spec = sync("events", "mirror", "event_name='e'\ntime_column='created_at'\ntime_unit='seconds'\ndistinct_id_column='user_id'");
    let err = RowMapper::new(
        &spec,
        &spec.validate().unwrap().mapping,
        &event_columns(),
        &ctx(),
    )
    .unwrap_err();
    assert!(err.mentions("sync.mapping.time_unit"), "{err}");
}

fn profile_columns() -> Vec<Column> {
    vec![
        col("id", ColumnKind::Text),
        col("email", ColumnKind::Text),
        col("plan", ColumnKind::Text),
        col("seats", ColumnKind::Int),
    ]
}

#[test]
fn user_profiles_set_and_unset() {
    let spec = sync(
        "user_profiles",
        "mirror",
        "distinct_id_column='id'\nkey_columns=['id']\nrenames={email='$email'}",
    );
    let m = mapper(&spec, &profile_columns());
    assert_eq!(m.record_kind(), RecordKind::UserProfile);
    let row = vec![text("u1"), text("a@b.c"), Value::Null, Value::Null];

    let mapped = m.map_profile(0, &row).unwrap();
    assert_eq!(
        mapped.id,
        ProfileId::User {
            distinct_id: "u1".into()
        }
    );
    assert_eq!(Json::Object(mapped.set.clone()), json!({"$email": "a@b.c"}));
    assert_eq!(
        mapped.null_properties,
        vec![(2, "plan".into()), (3, "seats".into())]
    );

    let mut out = Vec::new();
    m.encode_upsert(0, &row, Unset::Never, NOW, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        decode(&out[0]),
        json!({"$token": "tok", "$distinct_id": "u1", "$ignore_time": true, "$ip": 0, "$set": {"$email": "a@b.c"}})
    );
    assert_eq!(out[0].route_hash, xxhash_rust::xxh3::xxh3_64(b"u1"));

    out.clear();
    m.encode_upsert(0, &row, Unset::AllNull, NOW, &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(decode(&out[1])["$unset"], json!(["plan", "seats"]));

    // Only what the previous version had is unset.
    out.clear();
    let previous = vec![text("u1"), text("old@b.c"), text("pro"), Value::Null];
    m.encode_upsert(0, &row, Unset::PreviouslySet(&previous), NOW, &mut out)
        .unwrap();
    assert_eq!(decode(&out[1])["$unset"], json!(["plan"]));

    out.clear();
    m.encode_delete(0, &row, &mut out).unwrap();
    assert_eq!(decode(&out[0])["$delete"], "");
    assert_eq!(decode(&out[0])["$distinct_id"], "u1");

    let err = m.encode_upsert(
        5,
        &[Value::Null, text("x"), Value::Null, Value::Null],
        Unset::Never,
        NOW,
        &mut out,
    );
    assert_eq!(err.unwrap_err().field, "id");
}

#[test]
fn group_profiles_carry_key_and_id() {
    let spec = sync(
        "group_profiles",
        "full",
        "group_key='company_id'\ngroup_id_column='id'\nexcludes=['email']",
    );
    let m = mapper(&spec, &profile_columns());
    let mut out = Vec::new();
    m.encode_upsert(
        0,
        &[text("c-9"), text("x@y"), text("pro"), Value::Int(5)],
        Unset::Never,
        NOW,
        &mut out,
    )
    .unwrap();
    assert_eq!(out[0].kind, RecordKind::GroupProfile);
    assert_eq!(
        decode(&out[0]),
        json!({"$token": "tok", "$group_key": "company_id", "$group_id": "c-9", "$ignore_time": true, "$ip": 0,
               "$set": {"plan": "pro", "seats": 5}})
    );
}

#[test]
fn profile_history_events() {
    let spec = sync(
        "profile_history",
        "mirror",
        "distinct_id_column='id'\ntime_column='valid_from'\nkey_columns=['id','valid_from']",
    );
    let columns = vec![
        col("id", ColumnKind::Text),
        col("valid_from", ColumnKind::Date),
        col("plan", ColumnKind::Text),
    ];
    let m = mapper(&spec, &columns);
    let mut out = Vec::new();
    let row = vec![
        text("u1"),
        Value::Date(NaiveDate::from_ymd_opt(2023, 1, 1).unwrap()),
        text("pro"),
    ];
    m.encode_upsert(0, &row, Unset::Never, NOW, &mut out)
        .unwrap();
    let event = decode(&out[0]);
    assert_eq!(event["event"], "public.orders");
    assert_eq!(
        event["properties"]["time"],
        Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis()
    );
    assert_eq!(event["properties"]["plan"], "pro");

    let with_list = vec![
        col("id", ColumnKind::Text),
        col("valid_from", ColumnKind::Date),
        col("tags", ColumnKind::Array),
    ];
    let err =
        RowMapper::new(&spec, &spec.validate().unwrap().mapping, &with_list, &ctx()).unwrap_err();
    assert!(err.to_string().contains("lists or objects"), "{err}");
}

#[test]
fn group_profile_history_events_carry_the_group() {
    let spec = sync(
        "profile_history",
        "mirror",
        "group_key='company_id'\ngroup_id_column='company'\nstart_time_column='valid_from'",
    );
    let columns = vec![
        col("company", ColumnKind::Text),
        col("valid_from", ColumnKind::Date),
        col("plan", ColumnKind::Text),
    ];
    let m = mapper(&spec, &columns);
    let row = vec![
        text("acme"),
        Value::Date(NaiveDate::from_ymd_opt(2023, 2, 1).unwrap()),
        text("pro"),
    ];
    let mut out = Vec::new();
    m.encode_upsert(0, &row, Unset::Never, NOW, &mut out)
        .unwrap();
    let event = decode(&out[0]);
    assert_eq!(event["properties"]["distinct_id"], "acme");
    assert_eq!(event["properties"]["company_id"], "acme");
    assert_eq!(event["properties"]["plan"], "pro");
    assert!(event["properties"].get("company").is_none(), "{event}");
    // Identified by group id and start time (the default Mirror key).
    let other_time = vec![
        text("acme"),
        Value::Date(NaiveDate::from_ymd_opt(2023, 3, 1).unwrap()),
        text("pro"),
    ];
    assert_ne!(m.insert_id(&row), m.insert_id(&other_time));
    let changed_plan = vec![row[0].clone(), row[1].clone(), text("free")];
    assert_eq!(m.insert_id(&row), m.insert_id(&changed_plan));
}

#[test]
fn deleted_events_are_records_only_where_the_destination_deletes() {
    let spec = sync(
        "events",
        "mirror",
        "event_name='Order'\ntime_column='created_at'\ndistinct_id_column='user_id'\nkey_columns=['order_id']",
    );
    let columns = event_columns();
    let row = vec![
        Value::Int(7),
        text("u1"),
        ts("2023-05-01T00:00:00Z"),
        Value::Int(100),
        Value::Null,
        Value::Null,
        text("s"),
    ];
    let plain = mapper(&spec, &columns);
    assert!(plain.deletes_events() && !plain.event_deletes());
    let mut out = Vec::new();
    let err = plain.encode_delete(3, &row, &mut out).unwrap_err();
    assert!(err.message.contains("not applied"), "{err}");
    assert!(out.is_empty());

    let deleting = mapper(&spec, &columns).with_event_deletes(true);
    deleting.encode_delete(3, &row, &mut out).unwrap();
    let mut upsert = Vec::new();
    deleting
        .encode_upsert(3, &row, Unset::Never, NOW, &mut upsert)
        .unwrap();
    assert_eq!(out[0].kind, RecordKind::EventDelete);
    // The delete names exactly the event that was sent: same dedup key.
    let (sent, delete) = (decode(&upsert[0]), decode(&out[0]));
    for field in ["time", "distinct_id", "$insert_id"] {
        assert_eq!(
            sent["properties"][field], delete["properties"][field],
            "{field}"
        );
    }
    assert_eq!(sent["event"], delete["event"]);

    // Profiles are deleted with $delete whatever the destination.
    let users = sync("user_profiles", "mirror", "distinct_id_column='id'");
    let m = mapper(
        &users,
        &[col("id", ColumnKind::Text), col("plan", ColumnKind::Text)],
    );
    assert!(!m.deletes_events());
    let mut out = Vec::new();
    m.encode_delete(0, &[text("u1"), text("pro")], &mut out)
        .unwrap();
    assert!(decode(&out[0]).get("$delete").is_some());
}

#[test]
fn lookup_csv_round_trips_through_the_parser() {
    let spec = sync(
        "lookup_table",
        "full",
        "lookup_table_id='7'\nkey_column='sku'\nrenames={title='Title'}\nexcludes=['internal']",
    );
    let valid = spec.validate().unwrap();
    let columns = vec![
        col("title", ColumnKind::Text),
        col("sku", ColumnKind::Int),
        col("price", ColumnKind::Decimal),
        col("launched", ColumnKind::Timestamp),
        col("tags", ColumnKind::Array),
        col("active", ColumnKind::Bool),
        col("internal", ColumnKind::Text),
        col("ratio", ColumnKind::Float),
    ];
    let mut w = LookupCsvWriter::new(&valid.mapping, &columns).unwrap();
    w.write_row(
        0,
        &[
            text("Widget, \"large\""),
            Value::Int(1001),
            Value::Decimal("12.50".into()),
            ts("2024-01-02T03:04:05+00:00"),
            Value::Array(vec![text("a"), text("b c")]),
            Value::Bool(true),
            text("hidden"),
            Value::Float(0.25),
        ],
    )
    .unwrap();
    w.write_row(
        1,
        &[
            text("Gadget"),
            Value::Int(1002),
            Value::Null,
            Value::Null,
            Value::Array(vec![]),
            Value::Bool(false),
            Value::Null,
            Value::Null,
        ],
    )
    .unwrap();
    let dup = w.write_row(
        2,
        &[
            text("x"),
            Value::Int(1001),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ],
    );
    assert!(dup.unwrap_err().message.contains("duplicate"));
    let null_key = w.write_row(
        3,
        &[
            text("x"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ],
    );
    assert!(null_key.is_err());
    assert_eq!(w.rows(), 2);

    let body = w.finish().unwrap();
    let table = parse_lookup_csv(&body).unwrap();
    assert_eq!(
        table.columns,
        ["sku", "Title", "price", "launched", "tags", "active", "ratio"]
    );
    assert_eq!(
        Json::Object(table.rows[0].clone()),
        json!({"sku": "1001", "Title": "Widget, \"large\"", "price": 12.5, "launched": "2024-01-02T03:04:05Z",
               "tags": ["a", "b c"], "active": true, "ratio": 0.25})
    );
    assert!(crate::ingest::lookup::is_datetime(
        table.rows[0]["launched"].as_str().unwrap()
    ));
    assert_eq!(
        Json::Object(table.rows[1].clone()),
        json!({"sku": "1002", "Title": "Gadget", "tags": [], "active": false})
    );
}

#[test]
fn lookup_writer_checks_its_columns() {
    let spec = sync(
        "lookup_table",
        "full",
        "lookup_table_id='7'\nkey_column='sku'\nrenames={title='sku2'}",
    );
    let valid = spec.validate().unwrap();
    let err = LookupCsvWriter::new(&valid.mapping, &[col("title", ColumnKind::Text)])
        .err()
        .unwrap();
    assert!(err.mentions("sync.mapping.key_column"), "{err}");
    let err = LookupCsvWriter::new(&valid.mapping, &[col("sku", ColumnKind::Text)])
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("at least one more column"),
        "{err}"
    );
}

/// The direct event writer must give byte for byte what the general path (map, validate,
/// serialize) gives, and step aside wherever validation refuses or changes a row.
#[test]
fn direct_event_encoding_matches_the_general_path() {
    let columns = vec![
        col("id", ColumnKind::Int),
        col("user_id", ColumnKind::Text),
        col("device", ColumnKind::Text),
        col("name", ColumnKind::Text),
        col("at", ColumnKind::Timestamp),
        col("f", ColumnKind::Float),
        col("d", ColumnKind::Decimal),
        col("b", ColumnKind::Bytes),
        col("u", ColumnKind::Uuid),
        col("day", ColumnKind::Date),
        col("naive", ColumnKind::TimestampNaive),
        col("list", ColumnKind::Array),
        col("j", ColumnKind::Json),
        col("flag", ColumnKind::Bool),
        col("s", ColumnKind::Text),
        col("props", ColumnKind::Json),
    ];
    let spec = sync(
        "events",
        "mirror",
        r#"
event_name_column = "name"
time_column = "at"
distinct_id_column = "user_id"
device_id_column = "device"
properties_column = "props"
key_columns = ["id"]
renames = { s = "page" }
"#,
    );
    let m = mapper(&spec, &columns);
    let base = |i: i64| -> Vec<Value> {
        vec![
            Value::Int(i),
            text(&format!("user-{i}")),
            text("dev-1"),
            text("Page Viewed"),
            ts("2023-11-14T10:00:00.250+01:00"),
            Value::Float(1.5),
            Value::Decimal("12.50".into()),
            Value::Bytes(vec![0, 1, 255]),
            Value::Uuid(uuid::Uuid::from_u128(
                0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            )),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Value::TimestampNaive(
                NaiveDate::from_ymd_opt(2024, 1, 2)
                    .unwrap()
                    .and_hms_milli_opt(3, 4, 5, 6)
                    .unwrap(),
            ),
            Value::Array(vec![Value::Int(1), text("a"), Value::Null]),
            Value::Json(json!({"a": {"b": {"c": 1}}, "list": [1, "x", null]})),
            Value::Bool(true),
            text("/pricing"),
            Value::Json(
                json!({"plan": "pro", "page": "from json", "time": 1, "$import": false, "w": 2.5}),
            ),
        ]
    };
    let long = "é".repeat(crate::ingest::limits::MAX_STRING_CHARS + 1);
    let at_limit = "é".repeat(crate::ingest::limits::MAX_STRING_CHARS);
    let mut cases: Vec<(&str, Vec<Value>, bool)> = vec![("plain", base(1), true)];
    let mut edit = |label: &'static str, direct: bool, f: &dyn Fn(&mut Vec<Value>)| {
        let mut row = base(cases.len() as i64 + 1);
        f(&mut row);
        cases.push((label, row, direct));
    };
    edit("nulls are left out", true, &|r| {
        r[5] = Value::Null;
        r[14] = Value::Null;
        r[15] = Value::Null;
    });
    edit("escapes", true, &|r| {
        r[14] =
            text("quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} emoji 🚀 slash /");
        r[15] = Value::Json(json!({"k\"ey\n": "v\\al\u{1}ue", "ünï": "çødé"}));
    });
    edit("255 multi-byte characters are kept", true, &|r| {
        r[14] = text(&at_limit)
    });
    edit("non-finite float, inexact decimal", true, &|r| {
        r[5] = Value::Float(f64::NAN);
        r[6] = Value::Decimal("12345678901234567.89".into());
    });
    edit("small and large floats", true, &|r| {
        r[5] = Value::Float(1e21);
        r[6] = Value::Decimal("-0.1".into());
    });
    edit("properties column as text", true, &|r| {
        r[15] = text(r#"{"from_text": [1, 2], "page": "x"}"#)
    });
    edit(
        "distinct id from a JSON key loses to the column",
        true,
        &|r| {
            r[15] = Value::Json(
                json!({"distinct_id": "json-user", "$insert_id": "nope", "$device_id": "jd"}),
            );
        },
    );
    edit("long string in a column is truncated", false, &|r| {
        r[14] = text(&long)
    });
    edit("long string in the JSON column", false, &|r| {
        r[15] = Value::Json(json!({"x": long.clone()}))
    });
    edit("long string in a list", false, &|r| {
        r[11] = Value::Array(vec![text(&long)])
    });
    edit("long bytes", false, &|r| r[7] = Value::Bytes(vec![7; 300]));
    edit("objects nested too deep", false, &|r| {
        r[12] = Value::Json(json!({"a": {"b": {"c": {"d": 1}}}}))
    });
    edit(
        "distinct id missing: derived from the device id",
        false,
        &|r| r[1] = Value::Null,
    );
    edit("refused distinct id", false, &|r| r[1] = text("undefined"));
    edit("event name missing", false, &|r| r[3] = Value::Null);
    edit("blank event name", false, &|r| r[3] = text("  "));
    edit("time missing", false, &|r| r[4] = Value::Null);
    edit("time in the future", false, &|r| {
        r[4] = ts("2099-01-01T00:00:00Z")
    });
    edit("properties column not an object", false, &|r| {
        r[15] = Value::Json(json!([1, 2]))
    });
    edit("properties column malformed text", false, &|r| {
        r[15] = text("{not json")
    });
    edit("too many properties", false, &|r| {
        let map: serde_json::Map<String, Json> =
            (0..300).map(|i| (format!("p{i}"), json!(i))).collect();
        r[15] = Value::Json(Json::Object(map));
    });
    for (label, row, direct) in &cases {
        let general = m.encode_event_general(0, row, NOW);
        match m.encode_event_direct(row, NOW) {
            Some(fast) => {
                assert!(*direct, "{label}: expected the general path to be needed");
                let general = general.clone().unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(
                    String::from_utf8_lossy(&fast.json),
                    String::from_utf8_lossy(&general.json),
                    "{label}"
                );
                assert_eq!(fast, general, "{label}");
            }
            None => assert!(!*direct, "{label}: the direct path stepped aside"),
        }
        // Whichever path runs, encode_upsert gives the general path's answer.
        let mut out = Vec::new();
        let upsert = m.encode_upsert(0, row, Unset::Never, NOW, &mut out);
        match &general {
            Ok(g) => assert_eq!(out, vec![g.clone()], "{label}"),
            Err(e) => assert_eq!(&upsert.unwrap_err(), e, "{label}"),
        }
        // The same row with its JSON cells as text the way PostgreSQL prints jsonb (spaces,
        // shorter keys first) encodes to the same bytes on the same path, and hashes the same.
        let as_text: Vec<Value> = row.iter().map(jsonb_text).collect();
        assert_eq!(
            m.encode_event_direct(&as_text, NOW),
            m.encode_event_direct(row, NOW),
            "{label}: direct path, JSON as text"
        );
        assert_eq!(
            m.encode_event_general(0, &as_text, NOW)
                .map_err(|e| e.to_string()),
            general.map_err(|e| e.to_string()),
            "{label}: general path, JSON as text"
        );
        assert_eq!(
            crate::checksum::row_checksum(&as_text),
            crate::checksum::row_checksum(row),
            "{label}: checksum, JSON as text"
        );
    }
}

/// A JSON cell as PostgreSQL's jsonb output would send it: `", "` and `": "` separators, keys
/// ordered by length then bytes (not serde_json's order).
fn jsonb_text(value: &Value) -> Value {
    fn write(j: &Json, out: &mut String) {
        match j {
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Json::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push_str(": ");
                    write(v, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    match value {
        Value::Json(j) => {
            let mut text = String::new();
            write(j, &mut text);
            Value::JsonText(crate::value::JsonText::new(text).unwrap())
        }
        other => other.clone(),
    }
}
