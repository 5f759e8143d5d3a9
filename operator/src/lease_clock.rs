//! When this process saw each table Lease change. A Lease expires a duration after its
//! holder last renewed it, measured on the reader's clock from the moment the reader saw that
//! renewal (as client-go's leader election does), never by comparing the writer's `renewTime`
//! with the reader's clock: two nodes' clocks may differ by more than a Lease.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Lease name → (the resourceVersion seen, when it was first seen).
#[derive(Default, Debug)]
pub struct LeaseClock {
    seen: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
}

impl LeaseClock {
    /// When this process first saw `lease` at `resource_version` (every renewal writes a new
    /// one): `now` if this is the first time. After a restart every Lease counts as just
    /// renewed, so a holder is given a whole Lease to show it is alive.
    pub fn observed(&self, lease: &str, resource_version: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut seen = self.seen.lock().expect("lease clock");
        match seen.get(lease) {
            Some((version, at)) if version == resource_version => *at,
            _ => {
                seen.insert(lease.to_string(), (resource_version.to_string(), now));
                now
            }
        }
    }

    /// Forgets a Lease that no longer exists.
    pub fn forget(&self, lease: &str) {
        self.seen.lock().expect("lease clock").remove(lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_lease_ages_from_when_its_version_was_first_seen() {
        let clock = LeaseClock::default();
        let t0 = Utc::now();
        assert_eq!(clock.observed("l", "1", t0), t0);
        // Seen again unchanged: it keeps ageing from the first sight.
        assert_eq!(clock.observed("l", "1", t0 + Duration::seconds(50)), t0);
        // Renewed (a new version): young again.
        let t1 = t0 + Duration::seconds(70);
        assert_eq!(clock.observed("l", "2", t1), t1);
        assert_eq!(
            clock.observed("other", "2", t1 + Duration::seconds(1)),
            t1 + Duration::seconds(1)
        );
        clock.forget("l");
        let t2 = t1 + Duration::seconds(5);
        assert_eq!(clock.observed("l", "2", t2), t2, "forgotten: first sight again");
    }
}
