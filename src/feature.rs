//! Features register themselves: each exports one [`Feature`] descriptor
//! that says everything the daemon needs of it (its tables, the kinds of job
//! it runs, its routes, its publishing subscriber, its state, what it does
//! at start and on SIGHUP). The crate root lists the descriptors; the
//! daemon, the router, the engine and the store take what they need from
//! [`Features`], so adding a feature touches that list and nothing else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::app::{App, State};
use crate::config::Config;
use crate::http::{OnFailure, Route};
use crate::jobs::{self, Runner, Runners};
use crate::publish::Subscriber;
use crate::store::{StoreError, TableSpec, Tables};

/// What a feature does once the store is open, before work begins (plan
/// its recurring jobs).
pub type Start = for<'a> fn(&'a Arc<App>) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;
/// What a reloaded config changes for a feature: called with the settings
/// before and after, once the new ones are in force.
pub type Reload = fn(&Arc<App>, &Arc<Config>, &Arc<Config>);

/// One feature, as the daemon sees it.
pub struct Feature {
    pub name: &'static str,
    /// Its tables, with their stable ids.
    pub tables: &'static [TableSpec],
    /// The kinds of job it runs, with their stable ids.
    pub jobs: &'static [Runner],
    pub routes: fn() -> Vec<Route>,
    /// Acts on each published event, in the publishing commit.
    pub subscriber: Option<Subscriber>,
    /// Makes its state, found later with `App::state`.
    pub state: Option<fn(&Features) -> State>,
    pub start: Option<Start>,
    pub reload: Option<Reload>,
    /// Makes the recorder of failed API calls (it may run a task of its own
    /// that holds the app; the router owns it, so it ends with the server).
    pub failed_calls: Option<fn(Arc<App>) -> OnFailure>,
}

impl Feature {
    /// A feature that has nothing yet: descriptors fill in what they have.
    pub const fn named(name: &'static str) -> Feature {
        Feature {
            name,
            tables: &[],
            jobs: &[],
            routes: Vec::new,
            subscriber: None,
            state: None,
            start: None,
            reload: None,
            failed_calls: None,
        }
    }
}

/// Every feature of a herald, in the order their routes are matched and
/// their subscribers told.
pub struct Features(&'static [&'static Feature]);

impl Features {
    /// The features `all`, checked: one name, table id and job id each.
    pub fn new(all: &'static [&'static Feature]) -> Result<Features, String> {
        let features = Features(all);
        let mut names: Vec<_> = all.iter().map(|f| f.name).collect();
        names.sort();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("the feature {} is listed twice", twice[0]));
        }
        features.tables()?;
        features.runners()?;
        Ok(features)
    }

    /// Every table: the base's and the features'.
    pub fn tables(&self) -> Result<Tables, String> {
        Tables::new(jobs::TABLES.iter().chain(self.0.iter().flat_map(|f| f.tables)))
    }

    pub fn runners(&self) -> Result<Runners, String> {
        Runners::new(self.0.iter().flat_map(|f| f.jobs))
    }

    pub fn subscribers(&self) -> Vec<Subscriber> {
        self.0.iter().filter_map(|f| f.subscriber).collect()
    }

    pub fn states(&self) -> Vec<State> {
        self.0.iter().filter_map(|f| f.state).map(|make| make(self)).collect()
    }

    pub fn routes(&self) -> Vec<Route> {
        self.0.iter().flat_map(|f| (f.routes)()).collect()
    }

    pub async fn start(&self, app: &Arc<App>) -> Result<(), (&'static str, StoreError)> {
        for f in self.0 {
            if let Some(start) = f.start {
                start(app).await.map_err(|e| (f.name, e))?;
            }
        }
        Ok(())
    }

    pub fn reload(&self, app: &Arc<App>, old: &Arc<Config>, new: &Arc<Config>) {
        for reload in self.0.iter().filter_map(|f| f.reload) {
            reload(app, old, new);
        }
    }

    /// Every feature's recorder of failed calls, as one.
    pub fn failed_calls(&self, app: &Arc<App>) -> OnFailure {
        let all: Vec<OnFailure> = self
            .0
            .iter()
            .filter_map(|f| f.failed_calls)
            .map(|make| make(app.clone()))
            .collect();
        Box::new(move |app, call, e| all.iter().for_each(|record| record(app, call, e)))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::jobs::{JobKey, JobKind, Ran};

    mod one {
        crate::store::tables! {
            /// A table of the first feature.
            FIRST: redb::TableDefinition<&str, u64> = ("first", 40);
        }
    }

    mod two {
        crate::store::tables! {
            /// Another feature's table, given an id already taken.
            SECOND: redb::TableDefinition<&str, u64> = ("second", 40);
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Tick;
    #[derive(Serialize, Deserialize)]
    struct Tock;

    impl JobKind for Tick {
        const ID: u32 = 77;
        const NAME: &'static str = "tick";
        async fn run(self, _: &App, _: JobKey) -> Result<Ran, StoreError> {
            Ok(Ran::Ok)
        }
    }

    impl JobKind for Tock {
        const ID: u32 = 77;
        const NAME: &'static str = "tock";
        async fn run(self, _: &App, _: JobKey) -> Result<Ran, StoreError> {
            Ok(Ran::Ok)
        }
    }

    const TABLES_ONE: Feature = Feature {
        tables: one::TABLES,
        ..Feature::named("one")
    };
    const TABLES_TWO: Feature = Feature {
        tables: two::TABLES,
        ..Feature::named("two")
    };
    const JOBS_ONE: Feature = Feature {
        jobs: &[Runner::of::<Tick>()],
        ..Feature::named("one")
    };
    const JOBS_TWO: Feature = Feature {
        jobs: &[Runner::of::<Tock>()],
        ..Feature::named("two")
    };

    fn refused(all: &'static [&'static Feature]) -> String {
        Features::new(all).err().expect("refused")
    }

    #[test]
    fn the_real_features_have_unique_ids() {
        Features::new(crate::FEATURES).unwrap();
    }

    #[test]
    fn a_duplicate_table_id_fails_at_start_and_says_what_to_do() {
        const SAME_ID: &[&Feature] = &[&TABLES_ONE, &TABLES_TWO];
        const SAME_NAME: &[&Feature] = &[&TABLES_ONE, &TABLES_ONE];
        let e = refused(SAME_ID);
        assert!(e.contains("both have the id 40") && e.contains("never reuse"), "{e}");
        let e = refused(SAME_NAME);
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn a_duplicate_job_id_fails_at_start_and_says_what_to_do() {
        const SAME_ID: &[&Feature] = &[&JOBS_ONE, &JOBS_TWO];
        let e = refused(SAME_ID);
        assert!(
            e.contains("tick and tock both have the id 77") && e.contains("never reuse"),
            "{e}"
        );
    }
}
