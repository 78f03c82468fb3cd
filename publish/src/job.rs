//! One publish from its settings, as `streaming-connector publish` and the scheduled Lambda
//! function (`functions/publisher`) both run it: open the state table, the Bronze bucket and
//! the catalog, publish once, report.

use crate::catalog::{self, BadCatalogSpec, CatalogSpec};
use crate::publisher::{PublishError, PublishReport, PublishSettings, Publisher};
use bronze::aws::{DynamoStateStore, S3ObjectStore};
use iceberg::TableIdent;
use std::collections::HashMap;

/// The table when `ICEBERG_TABLE` / `--table` is not given.
pub const DEFAULT_TABLE: &str = "bronze.records";

/// Errors of a publish job: its settings, opening the catalog, or the publish itself.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A required environment variable is missing or empty: permanent (fix the function's
    /// configuration).
    #[error("{name} is not set")]
    MissingEnv {
        /// The variable.
        name: &'static str,
    },
    /// The catalog setting names no catalog: permanent.
    #[error(transparent)]
    Catalog(#[from] BadCatalogSpec),
    /// The table is not `namespace.table`: permanent.
    #[error("table {table:?}: expected `namespace.table` (the Glue database and table)")]
    Table {
        /// The value given.
        table: String,
    },
    /// The catalog could not be opened.
    #[error("catalog {catalog}: {source}")]
    Open {
        /// The catalog.
        catalog: CatalogSpec,
        /// Why (boxed: `iceberg::Error` is large).
        source: Box<iceberg::Error>,
    },
    /// The publish failed (see [`PublishError`]; rerunning is always safe).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The publish committed everything but the partitions it held back at a committed
    /// object it cannot publish (see [`PublishReport::held_back`]). Every later publish
    /// starts there again; they need attention (restore the object).
    #[error("{}", held_back_message(report))]
    HeldBack {
        /// What the publish did, with the partitions held back.
        report: Box<PublishReport>,
    },
}

fn held_back_message(report: &PublishReport) -> String {
    // Each reason names its partition and object already.
    let held: Vec<&str> = report.held_back.iter().map(|h| h.reason.as_str()).collect();
    format!(
        "published {} records of {} partitions, held back {}: {}",
        report.records,
        report.partitions,
        held.len(),
        held.join("; ")
    )
}

impl JobError {
    /// Whether running again later can succeed without a configuration change.
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Open { .. } => true,
            JobError::Publish(e) => e.is_transient(),
            JobError::MissingEnv { .. }
            | JobError::Catalog(_)
            | JobError::Table { .. }
            | JobError::HeldBack { .. } => false,
        }
    }
}

/// Parses `namespace.table` (exactly two parts: Glue has one level of databases).
pub fn parse_table(table: &str) -> Result<TableIdent, JobError> {
    let bad = || JobError::Table {
        table: table.to_owned(),
    };
    match table.split_once('.') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('.') => {
            TableIdent::from_strs([ns, name]).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Everything one publish needs.
#[derive(Debug, Clone)]
pub struct PublishJob {
    /// The Bronze bucket (`BRONZE_BUCKET`).
    pub bucket: String,
    /// The state table with the commit logs (`STATE_TABLE`).
    pub state_table: String,
    /// The catalog (`ICEBERG_CATALOG`).
    pub catalog: CatalogSpec,
    /// Where tables live (`ICEBERG_WAREHOUSE`), e.g. `s3://bucket/iceberg`.
    pub warehouse: String,
    /// The table (`ICEBERG_TABLE`, default [`DEFAULT_TABLE`]).
    pub table: TableIdent,
    /// Storage and catalog-client settings ([`catalog::props_from_lookup`]).
    pub props: HashMap<String, String>,
    /// Knobs of the publish.
    pub settings: PublishSettings,
}

impl PublishJob {
    /// The scheduled function's settings, from its environment: `BRONZE_BUCKET`,
    /// `STATE_TABLE`, `ICEBERG_CATALOG` (`glue`, `glue:<account id>`, `sqlite:<path>`,
    /// `s3tables:<table bucket ARN>` or `rest:<URI>`), `ICEBERG_WAREHOUSE`, optional
    /// `ICEBERG_TABLE`, the SDK's variables for storage and the Glue and S3 Tables clients,
    /// and the REST catalog's authentication ([`catalog::REST_ENV`]).
    pub fn from_env() -> Result<Self, JobError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`PublishJob::from_env`] through `lookup`, so tests need not touch the process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, JobError> {
        let required = |name: &'static str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(JobError::MissingEnv { name })
        };
        let table = lookup("ICEBERG_TABLE")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        Ok(Self {
            bucket: required("BRONZE_BUCKET")?,
            state_table: required("STATE_TABLE")?,
            catalog: required("ICEBERG_CATALOG")?.parse()?,
            warehouse: required("ICEBERG_WAREHOUSE")?,
            table: parse_table(table.trim())?,
            props: catalog::props_from_lookup(&lookup),
            settings: PublishSettings::default(),
        })
    }

    /// Publishes once: every committed Bronze object not yet in the table, in one snapshot
    /// (creating the namespace and table when missing). `sdk` serves the state table and the
    /// bucket; the catalog is opened here, for this publish only.
    pub async fn run(&self, sdk: &aws_config::SdkConfig) -> Result<PublishReport, JobError> {
        let objects = S3ObjectStore::new(sdk, &self.bucket);
        let state = DynamoStateStore::new(sdk, &self.state_table);
        let catalog = catalog::open(&self.catalog, &self.warehouse, self.props.clone())
            .await
            .map_err(|source| JobError::Open {
                catalog: self.catalog.clone(),
                source: Box::new(source),
            })?;
        let publisher = Publisher {
            state: &state,
            objects: &objects,
            catalog: catalog.as_ref(),
            table: self.table.clone(),
            settings: self.settings.clone(),
            faults: Default::default(),
        };
        Ok(publisher.publish().await?)
    }

    /// Publishes once, as [`PublishJob::run`], and fails with [`JobError::HeldBack`] (after
    /// committing the other partitions) when a partition was held back: what a single run
    /// reports, the scheduled function's invocation and `streaming-connector publish`.
    pub async fn run_complete(
        &self,
        sdk: &aws_config::SdkConfig,
    ) -> Result<PublishReport, JobError> {
        let report = self.run(sdk).await?;
        if report.held_back.is_empty() {
            Ok(report)
        } else {
            Err(JobError::HeldBack {
                report: Box::new(report),
            })
        }
    }

    /// Publishes continuously: once now, then every `every`, until `stop` completes (checked
    /// between publishes, so a publish under way always finishes). A transient failure is
    /// logged and the next publish redoes it (a publish is exactly once whenever it is
    /// rerun); a permanent one (a bad setting, a table that is not ours) ends the loop. A
    /// partition held back at a bad object (logged at error level, in the report) does not:
    /// everything else goes on being published and every publish tries it again.
    /// `on_report` sees each publish's report. Returns how many publishes ran.
    pub async fn run_every(
        &self,
        sdk: &aws_config::SdkConfig,
        every: std::time::Duration,
        stop: impl std::future::Future<Output = ()>,
        mut on_report: impl FnMut(&PublishReport),
    ) -> Result<u64, JobError> {
        tokio::pin!(stop);
        let mut runs = 0;
        loop {
            match self.run(sdk).await {
                Ok(report) => on_report(&report),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, table = %self.table, "publish failed; the next one redoes it");
                }
                Err(e) => return Err(e),
            }
            runs += 1;
            tokio::select! {
                biased;
                () = &mut stop => return Ok(runs),
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const VARS: [(&str, &str); 4] = [
        ("BRONZE_BUCKET", "bronze-prod"),
        ("STATE_TABLE", "bronze-state"),
        ("ICEBERG_CATALOG", "glue"),
        ("ICEBERG_WAREHOUSE", "s3://bronze-prod/iceberg"),
    ];

    #[test]
    fn reads_the_function_environment() {
        let job = PublishJob::from_lookup(lookup(&VARS)).expect("valid");
        assert_eq!(job.bucket, "bronze-prod");
        assert_eq!(job.state_table, "bronze-state");
        assert_eq!(job.catalog, CatalogSpec::Glue { catalog_id: None });
        assert_eq!(job.warehouse, "s3://bronze-prod/iceberg");
        assert_eq!(job.table.to_string(), "bronze.records");

        let mut vars = VARS.to_vec();
        vars.push(("ICEBERG_TABLE", "lake.events"));
        vars[2].1 = "glue:123456789012";
        let job = PublishJob::from_lookup(lookup(&vars)).expect("valid");
        assert_eq!(job.table.namespace().as_ref(), &vec!["lake".to_owned()]);
        assert_eq!(job.table.name(), "events");
        assert_eq!(job.catalog.to_string(), "glue:123456789012");
    }

    #[test]
    fn refuses_a_bad_environment_naming_the_variable() {
        for missing in [
            "BRONZE_BUCKET",
            "STATE_TABLE",
            "ICEBERG_CATALOG",
            "ICEBERG_WAREHOUSE",
        ] {
            let mut vars: Vec<_> = VARS
                .iter()
                .filter(|(k, _)| *k != missing)
                .copied()
                .collect();
            let err = PublishJob::from_lookup(lookup(&vars)).expect_err(missing);
            assert!(matches!(err, JobError::MissingEnv { name } if name == missing));
            assert!(!err.is_transient());
            vars.push((missing, " "));
            let err = PublishJob::from_lookup(lookup(&vars)).expect_err(missing);
            assert!(matches!(err, JobError::MissingEnv { name } if name == missing));
        }
        let mut vars = VARS.to_vec();
        vars[2].1 = "hive";
        let err = PublishJob::from_lookup(lookup(&vars)).expect_err("catalog");
        assert!(matches!(err, JobError::Catalog(_)), "{err}");
        for table in ["records", "a.b.c", ".records", "bronze."] {
            let mut vars = VARS.to_vec();
            vars.push(("ICEBERG_TABLE", table));
            let err = PublishJob::from_lookup(lookup(&vars)).expect_err(table);
            assert!(matches!(err, JobError::Table { .. }), "{table}: {err}");
        }
    }
}
