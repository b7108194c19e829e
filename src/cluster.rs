//! The fleet of replicas (`[cluster]`): its members (a static list, or a DNS name
//! resolved again and again), which of them are down for a while after failing, and the
//! owner of each key by rendezvous hashing (highest random weight). Every replica with
//! the same member list computes the same owner; a member joining or leaving moves only
//! the keys it wins or owned, about 1/N of them.

use crate::metrics::{MemberLabels, Metrics};
use crate::upstream::peer::PeerClient;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The first backoff of a member that failed; it doubles while it keeps failing.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);
/// Peers asked before a replica fills a blob itself: the owner and the next candidate
/// (a dead owner then costs at most one more upstream fetch for the fleet).
pub const PEERS_TO_ASK: usize = 2;

/// A key's weight for a member: the first 8 bytes of SHA-256 over the member, a NUL and
/// the key. SHA-256 is fixed by its standard, so every build of every replica agrees
/// (Rust's `DefaultHasher` may change between releases).
pub fn weight(member: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("8 bytes"))
}

/// `members` ordered by their weight for `key`, heaviest (the owner) first; ties (never
/// seen with 64 bits) by URL.
pub fn rank<'a>(members: &'a [String], key: &str) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = members.iter().map(|m| (weight(m, key), m.as_str())).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.into_iter().map(|(_, m)| m).collect()
}

/// A member's URL as the cluster names it: scheme, host and port, no trailing slash.
pub fn member_name(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

#[derive(Debug, Clone, Copy)]
struct Down {
    until: Instant,
    backoff: Duration,
}

/// The replicas of one fleet and how to ask them.
pub struct Cluster {
    self_name: String,
    members: RwLock<Vec<String>>,
    down: Mutex<HashMap<String, Down>>,
    pub client: PeerClient,
}

impl Cluster {
    /// `members` must include `self_name` (it is added when not).
    pub fn new(self_name: String, members: Vec<String>, client: PeerClient) -> Cluster {
        let cluster = Cluster {
            self_name,
            members: RwLock::new(Vec::new()),
            down: Mutex::new(HashMap::new()),
            client,
        };
        cluster.set_members(members);
        cluster
    }

    pub fn self_name(&self) -> &str {
        &self.self_name
    }

    /// Replaces the member list (from DNS); this replica is always a member.
    pub fn set_members(&self, mut members: Vec<String>) {
        if !members.contains(&self.self_name) {
            members.push(self.self_name.clone());
        }
        members.sort();
        members.dedup();
        let mut current = self.members.write().unwrap_or_else(|p| p.into_inner());
        if *current != members {
            tracing::info!(?members, "cluster members");
            *current = members;
        }
    }

    pub fn members(&self) -> Vec<String> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The peers to ask for `key` before doing the work here, in order: the live
    /// candidates ranked before this replica, at most [`PEERS_TO_ASK`]. Empty when this
    /// replica is the first live candidate.
    pub fn peers_to_ask(&self, key: &str) -> Vec<String> {
        let members = self.members();
        let now = Instant::now();
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        rank(&members, key)
            .into_iter()
            .filter(|m| *m == self.self_name || down.get(*m).is_none_or(|d| d.until <= now))
            .take_while(|m| *m != self.self_name)
            .take(PEERS_TO_ASK)
            .map(str::to_string)
            .collect()
    }

    /// A member failed a request: skipped for a backoff that doubles while it fails.
    pub fn mark_down(&self, member: &str, why: &str) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let backoff = match down.get(member) {
            Some(d) if d.until > now => return,
            Some(d) => (d.backoff * 2).min(LONGEST_BACKOFF),
            None => FIRST_BACKOFF,
        };
        tracing::warn!(member, why, backoff_s = backoff.as_secs(), "cluster member marked down");
        down.insert(
            member.to_string(),
            Down {
                until: now + backoff,
                backoff,
            },
        );
    }

    /// A member answered: it is up again.
    pub fn mark_up(&self, member: &str) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.remove(member).is_some_and(|d| d.until > Instant::now()) {
            tracing::info!(member, "cluster member is up again");
        }
    }

    /// Each member and its state as of now: `self`, `up` or `down`.
    pub fn member_states(&self) -> Vec<(String, &'static str)> {
        let now = Instant::now();
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.members()
            .into_iter()
            .map(|m| {
                let state = if m == self.self_name {
                    "self"
                } else if down.get(&m).is_some_and(|d| d.until > now) {
                    "down"
                } else {
                    "up"
                };
                (m, state)
            })
            .collect()
    }

    /// `pullgate_cluster_members{member, state}` as of now.
    pub fn export(&self, metrics: &Metrics) {
        metrics.cluster_members.clear();
        for (member, state) in self.member_states() {
            metrics
                .cluster_members
                .get_or_create(&MemberLabels { member, state })
                .set(1);
        }
    }

    /// Resolves `host:port` every `every` and makes its addresses the members (with
    /// `scheme`); a failed or empty lookup keeps the members as they were.
    pub async fn follow_dns(self: Arc<Self>, name: String, scheme: String, every: Duration) {
        loop {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => {
                    let members: Vec<String> = addrs
                        .map(|a| match a {
                            std::net::SocketAddr::V4(v4) => format!("{scheme}://{v4}"),
                            std::net::SocketAddr::V6(v6) => format!("{scheme}://[{}]:{}", v6.ip(), v6.port()),
                        })
                        .collect();
                    if !members.is_empty() {
                        self.set_members(members);
                    }
                }
                Err(e) => tracing::warn!(name, error = %e, "cannot resolve cluster.peers_dns; keeping the members"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.0.0.{i}:5000")).collect()
    }

    fn keys() -> Vec<String> {
        (0..20_000).map(|i| format!("sha256:{i:064x}")).collect()
    }

    #[test]
    fn the_weight_is_fixed() {
        // Pinned: a change here would split a fleet running two builds.
        assert_eq!(weight("http://10.0.0.1:5000", "sha256:00"), 0x2b22_d0da_8a8f_5030);
    }

    #[test]
    fn a_member_joining_takes_about_one_nth() {
        let three = members(3);
        let four = members(4);
        let moved = keys()
            .iter()
            .filter(|k| rank(&three, k)[0] != rank(&four, k)[0])
            .count();
        let share = moved as f64 / keys().len() as f64;
        assert!((0.22..0.28).contains(&share), "moved {share}");
        // Every moved key moved to the new member.
        assert!(
            keys()
                .iter()
                .filter(|k| rank(&three, k)[0] != rank(&four, k)[0])
                .all(|k| rank(&four, k)[0] == four[3])
        );
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_keys() {
        let three = members(3);
        let two: Vec<String> = three[..2].to_vec();
        for k in keys() {
            let before = rank(&three, &k)[0];
            if before != three[2] {
                assert_eq!(rank(&two, &k)[0], before);
            }
        }
        let owned = keys().iter().filter(|k| rank(&three, k)[0] == three[2]).count();
        let share = owned as f64 / keys().len() as f64;
        assert!((0.30..0.37).contains(&share), "owned {share}");
    }

    fn cluster(me: usize, n: usize) -> Cluster {
        let client = PeerClient::new(crate::upstream::peer::PeerSettings {
            self_url: members(n)[me].clone(),
            secret: crate::secret::Secret::new("0123456789abcdef"),
            connect_timeout: Duration::from_secs(1),
            answer_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            ca_pem: None,
        })
        .unwrap();
        Cluster::new(members(n)[me].clone(), members(n), client)
    }

    #[tokio::test]
    async fn members_follow_the_dns_name() {
        let c = Arc::new(cluster(0, 1));
        let follow = tokio::spawn(c.clone().follow_dns(
            "localhost:5999".into(),
            "http".into(),
            Duration::from_millis(50),
        ));
        let until = Instant::now() + Duration::from_secs(5);
        while !c.members().contains(&"http://127.0.0.1:5999".to_string()) {
            assert!(
                Instant::now() < until,
                "localhost never became a member: {:?}",
                c.members()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            c.members().contains(&c.self_name().to_string()),
            "this replica stays a member"
        );
        // A name that does not resolve keeps the members as they were.
        let kept = c.members();
        follow.abort();
        let failing = tokio::spawn(c.clone().follow_dns(
            "no-such-host.invalid:5000".into(),
            "http".into(),
            Duration::from_millis(50),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        failing.abort();
        assert_eq!(c.members(), kept);
    }

    #[test]
    fn peers_to_ask_stop_at_self_and_skip_the_down() {
        let c = cluster(0, 3);
        for k in keys().iter().take(300) {
            let ranked = rank(&c.members(), k)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>();
            let mine = ranked.iter().position(|m| m == c.self_name()).unwrap();
            assert_eq!(c.peers_to_ask(k), ranked[..mine].to_vec());
        }
        let k = keys()
            .into_iter()
            .find(|k| rank(&c.members(), k)[2] == c.self_name())
            .unwrap();
        let ranked = rank(&c.members(), &k)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        c.mark_down(&ranked[0], "test");
        assert_eq!(c.peers_to_ask(&k), vec![ranked[1].clone()]);
        c.mark_up(&ranked[0]);
        assert_eq!(c.peers_to_ask(&k), ranked[..2].to_vec());
    }
}
