//! The OpenShift update graph (Cincinnati JSON: nodes and from→to edges) and what an
//! ImageSetConfiguration release channel selects from it, by oc-mirror v2's rules.

use super::imageset::ReleaseChannel;
use serde::Deserialize;
use std::collections::VecDeque;

/// An update graph: releases and the upgrades between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// `(from, to)` indexes into `nodes`.
    pub edges: Vec<(usize, usize)>,
}

/// One release of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub version: semver::Version,
    /// The release image pullspec, pinned by digest.
    pub payload: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("the update graph is not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("update graph nodes[{index}].version {value:?} is not a semantic version")]
    Version { index: usize, value: String },
    #[error("update graph has release {0} twice")]
    Duplicate(semver::Version),
    #[error("update graph edges[{index}] is [{from}, {to}] but there are only {nodes} nodes")]
    EdgeOutOfRange {
        index: usize,
        from: usize,
        to: usize,
        nodes: usize,
    },
    #[error("channel {channel}: the update graph has no releases")]
    Empty { channel: String },
    #[error("channel {channel}: no shortest path from {from} to {to}: {reason}")]
    NoPath {
        channel: String,
        from: semver::Version,
        to: semver::Version,
        reason: &'static str,
    },
    #[error("channel {channel}: no release between {min} and {max}")]
    NothingSelected {
        channel: String,
        min: semver::Version,
        max: semver::Version,
    },
}

#[derive(Deserialize)]
struct RawGraph {
    nodes: Vec<RawNode>,
    #[serde(default)]
    edges: Vec<(usize, usize)>,
}

#[derive(Deserialize)]
struct RawNode {
    version: String,
    payload: String,
}

impl Graph {
    /// Parses the graph service's answer. Unknown fields (node metadata,
    /// `conditionalEdges`) are ignored; an edge naming a missing node is an error.
    pub fn parse(json: &[u8]) -> Result<Graph, GraphError> {
        let raw: RawGraph = serde_json::from_slice(json)?;
        let mut nodes = Vec::with_capacity(raw.nodes.len());
        let mut seen = std::collections::HashSet::new();
        for (index, node) in raw.nodes.into_iter().enumerate() {
            let version = semver::Version::parse(&node.version).map_err(|_| GraphError::Version {
                index,
                value: node.version.clone(),
            })?;
            if !seen.insert(version.clone()) {
                return Err(GraphError::Duplicate(version));
            }
            nodes.push(Node {
                version,
                payload: node.payload,
            });
        }
        for (index, &(from, to)) in raw.edges.iter().enumerate() {
            if from >= nodes.len() || to >= nodes.len() {
                return Err(GraphError::EdgeOutOfRange {
                    index,
                    from,
                    to,
                    nodes: nodes.len(),
                });
            }
        }
        Ok(Graph {
            nodes,
            edges: raw.edges,
        })
    }

    pub fn node(&self, version: &semver::Version) -> Option<&Node> {
        self.nodes.iter().find(|n| &n.version == version)
    }

    /// The highest version.
    pub fn latest(&self) -> Option<&Node> {
        self.nodes.iter().max_by(|a, b| a.version.cmp(&b.version))
    }

    fn lowest(&self) -> Option<&Node> {
        self.nodes.iter().min_by(|a, b| a.version.cmp(&b.version))
    }

    /// What an ImageSetConfiguration channel selects, by oc-mirror v2's rules
    /// (`resolveChannelVersions` + `getChannelDownloads`), in ascending version order,
    /// without duplicates.
    pub fn select(&self, channel: &ReleaseChannel) -> Result<Vec<&Node>, GraphError> {
        let (Some(latest), Some(lowest)) = (self.latest(), self.lowest()) else {
            return Err(GraphError::Empty {
                channel: channel.name.clone(),
            });
        };
        let (min, max) = match (&channel.min_version, &channel.max_version) {
            (Some(min), Some(max)) => (min.clone(), max.clone()),
            // Heads only: just the latest release.
            (None, None) if !channel.full => (latest.version.clone(), latest.version.clone()),
            (min, None) => (
                min.clone().unwrap_or_else(|| lowest.version.clone()),
                latest.version.clone(),
            ),
            (None, Some(max)) => (lowest.version.clone(), max.clone()),
        };
        if channel.shortest_path {
            let no_path = |reason| GraphError::NoPath {
                channel: channel.name.clone(),
                from: min.clone(),
                to: max.clone(),
                reason,
            };
            if self.node(&min).is_none() {
                return Err(no_path("the start is not a release of the graph"));
            }
            if self.node(&max).is_none() {
                return Err(no_path("the end is not a release of the graph"));
            }
            let mut path = self
                .shortest_path(&min, &max)
                .ok_or_else(|| no_path("the end cannot be reached from the start"))?;
            path.sort_by(|a, b| a.version.cmp(&b.version));
            return Ok(path);
        }
        let mut picked: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.version >= min && n.version <= max)
            .collect();
        picked.sort_by(|a, b| a.version.cmp(&b.version));
        picked.dedup_by(|a, b| a.version == b.version);
        if picked.is_empty() {
            return Err(GraphError::NothingSelected {
                channel: channel.name.clone(),
                min,
                max,
            });
        }
        Ok(picked)
    }

    /// Breadth-first shortest upgrade path from `from` to `to` over `edges`, both ends
    /// included; neighbours are visited highest version first (as oc-mirror does), which
    /// decides between paths of equal length. None when either is not a node or `to`
    /// cannot be reached.
    pub fn shortest_path(&self, from: &semver::Version, to: &semver::Version) -> Option<Vec<&Node>> {
        let start = self.nodes.iter().position(|n| &n.version == from)?;
        let goal = self.nodes.iter().position(|n| &n.version == to)?;
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for &(a, b) in &self.edges {
            if a < self.nodes.len() && b < self.nodes.len() {
                next[a].push(b);
            }
        }
        for targets in &mut next {
            targets.sort_by(|&a, &b| self.nodes[b].version.cmp(&self.nodes[a].version));
            targets.dedup();
        }
        let mut parent: Vec<Option<usize>> = vec![None; self.nodes.len()];
        let mut visited = vec![false; self.nodes.len()];
        visited[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            if at == goal {
                break;
            }
            for &n in &next[at] {
                if !visited[n] {
                    visited[n] = true;
                    parent[n] = Some(at);
                    queue.push_back(n);
                }
            }
        }
        if !visited[goal] {
            return None;
        }
        let mut path = vec![&self.nodes[goal]];
        let mut at = goal;
        while let Some(p) = parent[at] {
            path.push(&self.nodes[p]);
            at = p;
        }
        path.reverse();
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    // 4.16.0 … 4.16.5; edge 0→1 is listed before 0→2 so that only the highest-first rule
    // can make the path go through 4.16.2.
    const GRAPH: &str = r#"{
      "nodes": [
        {"version":"4.16.0","payload":"quay.io/ocp-release@sha256:00","metadata":{"io.openshift.upgrades.graph.release.channels":"stable-4.16"}},
        {"version":"4.16.1","payload":"quay.io/ocp-release@sha256:01","metadata":{}},
        {"version":"4.16.2","payload":"quay.io/ocp-release@sha256:02"},
        {"version":"4.16.3","payload":"quay.io/ocp-release@sha256:03"},
        {"version":"4.16.5","payload":"quay.io/ocp-release@sha256:05"},
        {"version":"4.16.4","payload":"quay.io/ocp-release@sha256:04"}
      ],
      "edges": [[0,1],[0,2],[1,2],[1,3],[2,3],[2,5],[3,5],[5,4],[3,4]],
      "conditionalEdges": [{"edges":[{"from":"4.16.0","to":"4.16.5"}],"risks":[]}]
    }"#;

    fn graph() -> Graph {
        Graph::parse(GRAPH.as_bytes()).unwrap()
    }

    fn channel(min: Option<&str>, max: Option<&str>, shortest_path: bool, full: bool) -> ReleaseChannel {
        ReleaseChannel {
            name: "stable-4.16".into(),
            min_version: min.map(v),
            max_version: max.map(v),
            shortest_path,
            full,
        }
    }

    fn versions(nodes: &[&Node]) -> Vec<String> {
        nodes.iter().map(|n| n.version.to_string()).collect()
    }

    #[test]
    fn parses_nodes_and_edges() {
        let g = graph();
        assert_eq!(g.nodes.len(), 6);
        assert_eq!(g.edges.len(), 9);
        assert_eq!(g.latest().unwrap().version, v("4.16.5"));
        assert_eq!(g.node(&v("4.16.2")).unwrap().payload, "quay.io/ocp-release@sha256:02");
        assert!(g.node(&v("4.15.0")).is_none());
    }

    #[test]
    fn heads_only_selects_the_latest() {
        let g = graph();
        assert_eq!(
            versions(&g.select(&channel(None, None, false, false)).unwrap()),
            ["4.16.5"]
        );
        assert_eq!(
            versions(&g.select(&channel(None, None, true, false)).unwrap()),
            ["4.16.5"]
        );
    }

    #[test]
    fn full_selects_everything() {
        let g = graph();
        let all = ["4.16.0", "4.16.1", "4.16.2", "4.16.3", "4.16.4", "4.16.5"];
        assert_eq!(versions(&g.select(&channel(None, None, false, true)).unwrap()), all);
    }

    #[test]
    fn min_only_runs_to_the_latest() {
        let g = graph();
        let got = g.select(&channel(Some("4.16.3"), None, false, false)).unwrap();
        assert_eq!(versions(&got), ["4.16.3", "4.16.4", "4.16.5"]);
    }

    #[test]
    fn max_only_runs_from_the_lowest() {
        let g = graph();
        let got = g.select(&channel(None, Some("4.16.2"), false, false)).unwrap();
        assert_eq!(versions(&got), ["4.16.0", "4.16.1", "4.16.2"]);
    }

    #[test]
    fn min_and_max_select_the_range_even_without_full() {
        let g = graph();
        let got = g
            .select(&channel(Some("4.16.1"), Some("4.16.4"), false, false))
            .unwrap();
        assert_eq!(versions(&got), ["4.16.1", "4.16.2", "4.16.3", "4.16.4"]);
        // Bounds need not be nodes for a range.
        let got = g
            .select(&channel(Some("4.15.0"), Some("4.16.1"), false, false))
            .unwrap();
        assert_eq!(versions(&got), ["4.16.0", "4.16.1"]);
    }

    #[test]
    fn shortest_path_prefers_highest_neighbours() {
        let g = graph();
        let got = g.select(&channel(Some("4.16.0"), Some("4.16.3"), true, false)).unwrap();
        assert_eq!(versions(&got), ["4.16.0", "4.16.2", "4.16.3"]);
        // 4.16.0→4.16.2→4.16.3→4.16.5 is as short, but 4.16.4 is visited before 4.16.3.
        let path = g.shortest_path(&v("4.16.0"), &v("4.16.5")).unwrap();
        assert_eq!(versions(&path), ["4.16.0", "4.16.2", "4.16.4", "4.16.5"]);
        let got = g.select(&channel(Some("4.16.1"), None, true, false)).unwrap();
        assert_eq!(versions(&got), ["4.16.1", "4.16.3", "4.16.5"]);
        let got = g.select(&channel(None, Some("4.16.3"), true, false)).unwrap();
        assert_eq!(versions(&got), ["4.16.0", "4.16.2", "4.16.3"]);
        assert_eq!(
            versions(&g.shortest_path(&v("4.16.3"), &v("4.16.3")).unwrap()),
            ["4.16.3"]
        );
    }

    #[test]
    fn shortest_path_errors_name_the_channel_and_versions() {
        let g = graph();
        assert!(g.shortest_path(&v("4.16.5"), &v("4.16.0")).is_none());
        let e = g
            .select(&channel(Some("4.16.5"), Some("4.16.0"), true, false))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("stable-4.16") && msg.contains("4.16.5") && msg.contains("4.16.0"),
            "{msg}"
        );
        assert!(msg.contains("cannot be reached"), "{msg}");
        let e = g
            .select(&channel(Some("4.15.9"), Some("4.16.3"), true, false))
            .unwrap_err();
        assert!(
            e.to_string().contains("4.15.9") && e.to_string().contains("not a release"),
            "{e}"
        );
        let e = g
            .select(&channel(Some("4.16.0"), Some("4.16.9"), true, false))
            .unwrap_err();
        assert!(e.to_string().contains("4.16.9"), "{e}");
    }

    #[test]
    fn an_empty_selection_or_graph_is_an_error() {
        let g = graph();
        let e = g
            .select(&channel(Some("4.17.0"), Some("4.17.3"), false, false))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "channel stable-4.16: no release between 4.17.0 and 4.17.3"
        );
        let empty = Graph::parse(br#"{"nodes":[],"edges":[]}"#).unwrap();
        let e = empty.select(&channel(None, None, false, false)).unwrap_err();
        assert_eq!(e.to_string(), "channel stable-4.16: the update graph has no releases");
    }

    #[test]
    fn malformed_graphs_are_errors() {
        assert!(matches!(Graph::parse(b"{\"nodes\":["), Err(GraphError::Json(_))));
        assert!(matches!(Graph::parse(b"[]"), Err(GraphError::Json(_))));
        let e = Graph::parse(br#"{"nodes":[{"version":"4.16.0","payload":"p"}],"edges":[[0,1]]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "update graph edges[0] is [0, 1] but there are only 1 nodes"
        );
        let e = Graph::parse(br#"{"nodes":[{"version":"4.16","payload":"p"}],"edges":[]}"#).unwrap_err();
        assert!(e.to_string().contains("\"4.16\""), "{e}");
        let e = Graph::parse(br#"{"nodes":[{"version":"4.16.0","payload":"p"}],"edges":[[0,-1]]}"#).unwrap_err();
        assert!(matches!(e, GraphError::Json(_)));
        let twice = r#"{"nodes":[{"version":"4.16.0","payload":"p"},{"version":"4.16.0","payload":"q"}]}"#;
        assert!(matches!(Graph::parse(twice.as_bytes()), Err(GraphError::Duplicate(_))));
    }

    /// Unit-weight relaxation, independent of the BFS under test.
    fn distance(n: usize, edges: &[(usize, usize)], from: usize, to: usize) -> Option<usize> {
        let mut dist = vec![usize::MAX; n];
        dist[from] = 0;
        for _ in 0..n {
            for &(a, b) in edges {
                if dist[a] != usize::MAX && dist[a] + 1 < dist[b] {
                    dist[b] = dist[a] + 1;
                }
            }
        }
        (dist[to] != usize::MAX).then_some(dist[to])
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Graph::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_graphish_json(
            versions in proptest::collection::vec("[0-9]{1,2}\\.[0-9]{1,2}(\\.[0-9])?", 0..6),
            edges in proptest::collection::vec((0usize..8, 0usize..8), 0..8),
        ) {
            let nodes: Vec<String> = versions
                .iter()
                .map(|v| format!(r#"{{"version":"{v}","payload":"p"}}"#))
                .collect();
            let edges: Vec<String> = edges.iter().map(|(a, b)| format!("[{a},{b}]")).collect();
            let json = format!(r#"{{"nodes":[{}],"edges":[{}]}}"#, nodes.join(","), edges.join(","));
            if let Ok(g) = Graph::parse(json.as_bytes()) {
                let _ = g.select(&channel(None, None, true, false));
                let _ = g.select(&channel(None, None, false, true));
            }
        }

        #[test]
        fn shortest_path_is_a_shortest_path(
            n in 1usize..12,
            raw_edges in proptest::collection::vec((0usize..12, 0usize..12), 0..30),
            from in 0usize..12,
            to in 0usize..12,
        ) {
            let (from, to) = (from % n, to % n);
            // A DAG: every edge goes from a lower to a higher index (and version).
            let edges: Vec<(usize, usize)> = raw_edges
                .into_iter()
                .map(|(a, b)| (a % n, b % n))
                .filter(|(a, b)| a < b)
                .collect();
            let nodes = (0..n)
                .map(|i| Node { version: semver::Version::new(4, 16, i as u64), payload: format!("p{i}") })
                .collect();
            let g = Graph { nodes, edges: edges.clone() };
            let path = g.shortest_path(&g.nodes[from].version, &g.nodes[to].version);
            match (path, distance(n, &edges, from, to)) {
                (None, None) => {}
                (Some(path), Some(d)) => {
                    prop_assert_eq!(path.len(), d + 1);
                    prop_assert_eq!(&path[0].version, &g.nodes[from].version);
                    prop_assert_eq!(&path[path.len() - 1].version, &g.nodes[to].version);
                    for pair in path.windows(2) {
                        let a = pair[0].version.patch as usize;
                        let b = pair[1].version.patch as usize;
                        prop_assert!(edges.contains(&(a, b)), "{} -> {} is not an edge", a, b);
                    }
                }
                (path, d) => prop_assert!(false, "path {:?} but distance {:?}", path.map(|p| p.len()), d),
            }
        }
    }
}
