//! SPEC §3: a table owns what it wrote, and only that; it remembers how it was built; and a
//! run checks that the store enforces conditional writes before it writes anything. Local
//! folders and S3 (moto over HTTP, and a proxy that plays a store ignoring the conditions).

use std::collections::BTreeMap;

use lakeload::config::Mode;
use lakeload_testkit::faultproxy::FaultProxy;

use crate::common::*;
use crate::incremental::{Place, runtime};

/// Two files over three dates, keys repeating so later rows supersede earlier ones.
fn add_sources(place: &Place, first: usize) {
    for (i, day) in [(first, 1), (first + 1, 2)] {
        let mut text = String::new();
        for n in 0..40 {
            let date = format!("2024-01-0{}", day + n % 2);
            text += &format!("k{}|v{i}-{n}|x|y|z|{date}|{date}|s\n", n % 10);
        }
        place.add_source(&format!("f{i}.gz"), &gzip(text.as_bytes()), 1_000 + i as u64);
    }
}

fn places(hint: &str, dir: &std::path::Path) -> [Place; 2] {
    [
        Place::Local(dir.to_path_buf()),
        Place::S3 {
            bucket: S3Server::shared().bucket(hint),
            prefix: "p".into(),
        },
    ]
}

fn worker(place: &Place, table: &str, mode: &str, extra: &[(&str, &str)]) -> Lakeload {
    let mut cmd = Lakeload::new(std::path::Path::new("/"))
        .envs(place.env())
        .env("LAKELOAD_SOURCE_URL", place.url("src"))
        .env("LAKELOAD_TARGET_URL", place.url(table))
        .args(["run", "--mode", mode, "--json"]);
    for (k, v) in extra {
        cmd = cmd.env(k, v);
    }
    cmd
}

fn put(place: &Place, table: &str, key: &str, body: &[u8]) {
    runtime().block_on(async {
        let storage = open_storage(&place.url(table), place.s3()).await;
        storage
            .put(key, bytes::Bytes::copy_from_slice(body))
            .await
            .unwrap();
    })
}

/// Every object under the table root with its bytes (the lock, run summaries and logs left
/// out: they change with every run).
fn contents(place: &Place, table: &str) -> BTreeMap<String, Vec<u8>> {
    runtime().block_on(async {
        let storage = open_storage(&place.url(table), place.s3()).await;
        let mut out = BTreeMap::new();
        for meta in storage.list("").await.unwrap() {
            if meta.key.starts_with("_lakeload/runs/") || meta.key.starts_with("_lakeload/logs/") {
                continue;
            }
            let (bytes, _) = storage.get(&meta.key).await.unwrap().unwrap();
            out.insert(meta.key, bytes.to_vec());
        }
        out
    })
}

/// The rows of the table's own objects (those its state records), sorted.
fn own_rows(place: &Place, table: &str) -> Vec<TableRow> {
    runtime().block_on(async { owned_rows(&open_storage(&place.url(table), place.s3()).await).await })
}

/// The rows one full run over the same sources gives, in a table of its own.
fn reference(place: &Place) -> Vec<TableRow> {
    runtime().block_on(async {
        let table = format!("ref-{}", std::process::id());
        let report = lakeload::run::run(&place.config(&table, Mode::Full, "arrival"), false).await;
        report.result.unwrap();
        place.rows(&table).await
    })
}

const FOREIGN: &[(&str, &[u8])] = &[
    ("team-x/orders/part-0.parquet", b"someone else's parquet"),
    ("notes.parquet", b"a file at the root"),
    (
        "year=2024/month=01/day=01/extra.parquet",
        b"beside a date, in the table's layout",
    ),
    (
        "year=2023/month=12/day=31/2023-12-31.snappy.parquet.bak",
        b"a backup copy",
    ),
];

#[test]
fn foreign_objects_survive_full_and_incremental_runs_and_plan_lists_them() {
    let dir = tempdir();
    for place in places("foreign", dir.path()) {
        for (key, body) in FOREIGN {
            put(&place, "t", key, body);
        }
        add_sources(&place, 0);
        let first = worker(&place, "t", "incremental", &[]).output();
        assert_exit(&first, 0);
        assert!(
            stderr(&first).contains("this table did not write"),
            "{}",
            stderr(&first)
        );

        let plan = Lakeload::new(std::path::Path::new("/"))
            .envs(place.env())
            .env("LAKELOAD_SOURCE_URL", place.url("src"))
            .env("LAKELOAD_TARGET_URL", place.url("t"))
            .args(["plan", "--mode", "full", "--json"])
            .output();
        assert_exit(&plan, 0);
        let plan: serde_json::Value = serde_json::from_str(&stdout(&plan)).unwrap();
        let foreign: Vec<&str> = plan["foreign_objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        for (key, _) in FOREIGN {
            assert!(foreign.contains(key), "plan lists {key}: {foreign:?}");
        }
        assert_eq!(plan["objects_to_delete"].as_array().unwrap().len(), 0);

        add_sources(&place, 2);
        assert_exit(&worker(&place, "t", "incremental", &[]).output(), 0);
        // A full run whose sources no longer reach a date deletes that date's object: its own.
        runtime().block_on(async {
            let storage = open_storage(&place.url("src"), place.s3()).await;
            storage.delete("f1.gz").await.unwrap();
            storage.delete("f3.gz").await.unwrap();
        });
        let full = worker(&place, "t", "full", &[]).output();
        assert_exit(&full, 0);
        assert_eq!(
            summary_json(&full)["objects_deleted"],
            serde_json::json!(["year=2024/month=01/day=03/2024-01-03.snappy.parquet"])
        );

        let after = contents(&place, "t");
        for (key, body) in FOREIGN {
            assert_eq!(
                after.get(*key).map(Vec::as_slice),
                Some(*body),
                "{key} survived byte for byte"
            );
        }
        assert_eq!(own_rows(&place, "t"), reference(&place));
    }
}

#[test]
fn objects_where_the_table_stores_its_dates_are_refused_unless_adopted_or_replaced() {
    let dir = tempdir();
    for place in places("in-the-way", dir.path()) {
        add_sources(&place, 0);
        // Build the same table elsewhere and copy one of its objects into the new root: a
        // lakeload object the new table did not write.
        assert_exit(&worker(&place, "other", "full", &[]).output(), 0);
        let theirs = contents(&place, "other");
        let key = "year=2024/month=01/day=02/2024-01-02.snappy.parquet";
        put(&place, "t", key, &theirs[key]);
        let before = contents(&place, "t");

        for mode in ["incremental", "full"] {
            let refused = worker(&place, "t", mode, &[]).output();
            assert_exit(&refused, 2);
            let text = stderr(&refused);
            assert!(
                text.contains(key) && text.contains("target.existing_objects"),
                "{text}"
            );
            assert_eq!(
                contents(&place, "t"),
                before,
                "a refused {mode} run wrote nothing"
            );
        }

        // Adopted: it becomes the table's own (its rows are the same rows, so the table equals
        // a full run's).
        let adopted = worker(
            &place,
            "t",
            "incremental",
            &[("LAKELOAD_TARGET_EXISTING_OBJECTS", "adopt")],
        )
        .output();
        assert_exit(&adopted, 0);
        assert_eq!(own_rows(&place, "t"), reference(&place));

        // Replaced: a table in another root, where a stranger's object sits at a date.
        put(&place, "u", key, b"not parquet at all");
        let replaced = worker(
            &place,
            "u",
            "full",
            &[("LAKELOAD_TARGET_EXISTING_OBJECTS", "replace")],
        )
        .output();
        assert_exit(&replaced, 0);
        assert_eq!(own_rows(&place, "u"), reference(&place));
    }
}

/// Every row-shaping setting, changed for an incremental run after a first one.
const CHANGES: &[(&str, &str, &str)] = &[
    ("LAKELOAD_SCHEMA_COLUMNS", "a,b,c,d,e,c6,c7,c8", "schema.columns"),
    ("LAKELOAD_SCHEMA_DATE_COLUMNS", "c7", "schema.date_columns"),
    ("LAKELOAD_SCHEMA_KEY", "c1,c2,c7", "schema.key"),
    (
        "LAKELOAD_SCHEMA_TIMESTAMP_FORMAT",
        "%Y-%m-%d",
        "schema.timestamp_format",
    ),
    ("LAKELOAD_RUN_ORDER", "name", "run.order"),
    ("LAKELOAD_TARGET_LAYOUT", "date", "target.layout"),
];

#[test]
fn an_incremental_run_under_other_settings_is_refused_and_a_full_run_rebuilds() {
    let dir = tempdir();
    for place in places("settings", dir.path()) {
        add_sources(&place, 0);
        assert_exit(&worker(&place, "t", "incremental", &[]).output(), 0);
        add_sources(&place, 2);
        let before = contents(&place, "t");
        for (var, value, key) in CHANGES {
            let mut extra = vec![(*var, *value)];
            if *var == "LAKELOAD_SCHEMA_COLUMNS" {
                extra.push(("LAKELOAD_SCHEMA_KEY", "a,c7,c8"));
            }
            let refused = worker(&place, "t", "incremental", &extra).output();
            assert_exit(&refused, 2);
            let text = stderr(&refused);
            assert!(
                text.contains(key) && text.contains("--mode full"),
                "{var}: {text}"
            );
            assert_eq!(contents(&place, "t"), before, "{var}: the table is untouched");
        }
        // The partition column, in the `date` layout where it names the folders.
        let date_layout = [("LAKELOAD_TARGET_LAYOUT", "date")];
        assert_exit(&worker(&place, "t", "full", &date_layout).output(), 0);
        let new_layout = contents(&place, "t");
        assert!(
            new_layout.keys().all(|k| !k.starts_with("year=")),
            "the full run removed every object of the old layout: {:?}",
            new_layout.keys().collect::<Vec<_>>()
        );
        assert!(new_layout.keys().any(|k| k.starts_with("c7=")));
        let other_partition = [
            ("LAKELOAD_TARGET_LAYOUT", "date"),
            ("LAKELOAD_SCHEMA_PARTITION_COLUMN", "c6"),
            ("LAKELOAD_SCHEMA_KEY", "c1,c6,c8"),
        ];
        let refused = worker(&place, "t", "incremental", &other_partition).output();
        assert_exit(&refused, 2);
        assert!(
            stderr(&refused).contains("schema.partition_column"),
            "{}",
            stderr(&refused)
        );
        assert_exit(&worker(&place, "t", "full", &other_partition).output(), 0);
        let rebuilt = contents(&place, "t");
        assert!(
            rebuilt.keys().all(|k| !k.starts_with("c7=")),
            "{:?}",
            rebuilt.keys()
        );
        // Back to the defaults, incremental runs go on.
        assert_exit(&worker(&place, "t", "full", &[]).output(), 0);
        assert_exit(&worker(&place, "t", "incremental", &[]).output(), 0);
        assert_eq!(own_rows(&place, "t"), reference(&place));
    }
}

#[test]
fn a_table_of_the_previous_version_keeps_working_and_gains_its_settings() {
    let dir = tempdir();
    let place = Place::Local(dir.path().to_path_buf());
    add_sources(&place, 0);
    assert_exit(&worker(&place, "t", "incremental", &[]).output(), 0);
    // What lakeload 0.1's state looked like: version 1, no settings, no store check.
    let state_path = dir.path().join("t/_lakeload/state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let fields = state.as_object_mut().unwrap();
    fields.remove("settings");
    fields.remove("store");
    fields.insert("version".into(), 1.into());
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    // Its layout still tells: a run in another layout is refused.
    let refused = worker(&place, "t", "incremental", &[("LAKELOAD_TARGET_LAYOUT", "date")]).output();
    assert_exit(&refused, 2);
    assert!(stderr(&refused).contains("target.layout"), "{}", stderr(&refused));

    add_sources(&place, 2);
    assert_exit(&worker(&place, "t", "incremental", &[]).output(), 0);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["version"], 2);
    assert_eq!(state["settings"]["key"], serde_json::json!(["c1", "c7", "c8"]));
    assert_eq!(state["settings"]["layout"], "ymd");
    assert_eq!(own_rows(&place, "t"), reference(&place));
}

#[test]
fn a_store_that_ignores_conditional_writes_is_refused_before_anything_is_written() {
    let place = Place::S3 {
        bucket: S3Server::shared().bucket("unsafe-store"),
        prefix: "p".into(),
    };
    add_sources(&place, 0);
    let proxy = FaultProxy::start(&S3Server::shared().endpoint);
    proxy.ignore_conditional_writes();
    let through_proxy = [("LAKELOAD_AWS_ENDPOINT_URL", proxy.endpoint.as_str())];
    let refused = worker(&place, "t", "incremental", &through_proxy).output();
    assert_exit(&refused, 2);
    let text = stderr(&refused);
    assert!(
        text.contains(&proxy.endpoint) && text.contains("lock.allow_unsafe_store"),
        "the message names the endpoint and the setting: {text}"
    );
    assert!(
        contents(&place, "t").is_empty(),
        "nothing was written: {:?}",
        contents(&place, "t").keys()
    );

    // Accepting the risk: the run goes on, says so, and the state records what was found.
    let mut allowed = through_proxy.to_vec();
    allowed.push(("LAKELOAD_LOCK_ALLOW_UNSAFE_STORE", "true"));
    let accepted = worker(&place, "t", "incremental", &allowed).output();
    assert_exit(&accepted, 0);
    assert!(
        stderr(&accepted).contains("ignores conditional writes"),
        "{}",
        stderr(&accepted)
    );
    let state: serde_json::Value =
        serde_json::from_slice(&contents(&place, "t")["_lakeload/state.json"]).unwrap();
    assert_eq!(state["store"]["conditional_writes"], false);

    // Straight to moto, which enforces them: checked once, recorded, not probed again.
    add_sources(&place, 2);
    assert_exit(&worker(&place, "t", "incremental", &[]).output(), 0);
    let state: serde_json::Value =
        serde_json::from_slice(&contents(&place, "t")["_lakeload/state.json"]).unwrap();
    assert_eq!(state["store"]["conditional_writes"], true);
    assert_eq!(state["store"]["endpoint"], S3Server::shared().endpoint.as_str());
}

#[test]
fn the_original_jobs_config_on_a_shared_bucket_loses_nothing() {
    // The seed job's own config shape maps the table to the bucket root, where another team's
    // Parquet files live.
    let s3 = S3Server::shared();
    let (landing, lake) = (s3.bucket("landing"), s3.bucket("lake"));
    let theirs: &[(&str, &[u8])] = &[
        ("team-x/orders/part-0.parquet", b"team x's orders"),
        ("team-x/orders/part-1.parquet", b"more of them"),
        ("export.parquet", b"a file at the bucket root"),
    ];
    for (key, body) in theirs {
        s3.put(&lake, key, body);
    }
    let mut text = String::new();
    for n in 0..50 {
        text += &format!(
            "k{}|v{n}|x|y|z|2024-01-0{}|2024-01-0{}|s\n",
            n % 7,
            1 + n % 3,
            1 + n % 3
        );
    }
    s3.put(&landing, "in/a.gz", &gzip(text.as_bytes()));
    let dir = tempdir();
    std::fs::write(
        dir.path().join("common.conf"),
        format!(
            "[aws_params]\ns3_source_bucket = {landing}\ns3_target_bucket = {lake}\naws_key = testing\n\
             aws_secret_key = testing\naws_region = us-east-1\n"
        ),
    )
    .unwrap();
    let run = |mode: &str| {
        Lakeload::new(dir.path())
            .env("LAKELOAD_AWS_ENDPOINT_URL", &s3.endpoint)
            .args(["run", "--mode", mode, "--json"])
            .output()
    };
    for mode in ["full", "incremental", "full"] {
        let out = run(mode);
        assert_exit(&out, 0);
    }
    runtime().block_on(async {
        let storage = open_storage(&format!("s3://{lake}"), Some(s3)).await;
        for (key, body) in theirs {
            let (kept, _) = storage.get(key).await.unwrap().expect("still there");
            assert_eq!(&kept[..], *body, "{key} untouched");
        }
        assert_eq!(owned_rows(&storage).await.len(), 21, "7 keys on each of 3 dates");
    });
}
