//! `lakeload demo`: sample data into a local folder, a full run, new files arriving, an
//! incremental run, then the table's status, with the commands to read the result.

pub mod generate;

use std::path::{Path, PathBuf};

use crate::config::{Config, RawConfig};
use crate::demo::generate::{GenerateOptions, generate};
use crate::error::{Error, Result};
use crate::report::format_summary;

const MARKER: &str = ".lakeload-demo";

/// What the demo leaves behind.
pub struct DemoReport {
    pub dir: PathBuf,
    pub table: PathBuf,
    pub config_file: PathBuf,
}

fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() && !dir.join(MARKER).exists() {
        return Err(Error::Config(format!(
            "{} exists and was not made by `lakeload demo`; pass an empty or new folder: lakeload demo DIR",
            dir.display()
        )));
    }
    for sub in ["source", "table"] {
        let path = dir.join(sub);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), "made by lakeload demo; safe to delete\n")?;
    Ok(())
}

pub async fn demo(dir: &Path, interactive: bool) -> Result<DemoReport> {
    let dir = std::path::absolute(dir)?;
    prepare(&dir)?;
    let (source, table) = (dir.join("source"), dir.join("table"));
    let config_file = dir.join("common.conf");
    std::fs::write(
        &config_file,
        format!(
            "# Written by `lakeload demo`. Re-run with: lakeload --config {} run\n\
             [source]\nurl = {}\n\n[target]\nurl = {}\n\n[run]\nmode = incremental\n",
            config_file.display(),
            source.display(),
            table.display()
        ),
    )?;
    let config = Config::from_raw(&RawConfig::from_file(&config_file)?)?;

    let first = GenerateOptions {
        dir: source.clone(),
        files: 12,
        rows_per_file: 5_000,
        files_per_day: 3,
        bad_ratio: 0.002,
        ..GenerateOptions::default()
    };
    let generated = generate(&first)?;
    crate::outln!(
        "1. Generated {} source files ({} lines, some duplicated across files, a few bad) under {}\n",
        generated.files,
        generated.lines,
        source.display()
    );

    crate::outln!("2. Full run: builds the table from every source file\n");
    let mut full = config.clone();
    full.run.mode = crate::config::Mode::Full;
    run_step(&full, interactive).await?;

    let second = GenerateOptions {
        files: 4,
        first_file: first.files,
        seed: 7,
        ..first.clone()
    };
    let generated = generate(&second)?;
    crate::outln!(
        "3. {} new files arrived ({} lines: new days, late rows for earlier days, re-sent rows)\n",
        generated.files,
        generated.lines
    );

    crate::outln!("4. Incremental run: reads only the new files, rewrites only the dates they touch\n");
    run_step(&config, interactive).await?;

    crate::outln!("5. Status\n");
    let status = crate::inspect::status::status(&config).await?;
    crate::outln!("{}", crate::inspect::status::format_status(&status));

    let glob = table.join("**").join("*.parquet");
    crate::outln!("The table is in {}", table.display());
    crate::outln!("Read it with DuckDB:");
    crate::outln!(
        "  duckdb -c \"SELECT c7, count(*) AS rows FROM read_parquet('{}', hive_partitioning = true) GROUP BY c7 ORDER BY c7\"",
        glob.display()
    );
    crate::outln!("or pandas:");
    crate::outln!(
        "  python3 -c \"import pandas as pd; print(pd.read_parquet('{}').groupby('c7').size())\"",
        table.display()
    );
    crate::outln!(
        "Run it again yourself: lakeload --config {} run",
        config_file.display()
    );
    Ok(DemoReport {
        dir,
        table,
        config_file,
    })
}

async fn run_step(config: &Config, interactive: bool) -> Result<()> {
    let report = crate::run::run(config, interactive).await;
    if let Some(summary) = &report.summary {
        crate::outln!("{}", format_summary(summary));
    }
    report.result
}
