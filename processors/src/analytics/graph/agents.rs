//! Agent edges: a span whose parent belongs to another agent, in any kind of span
//! (agents hand work to each other in one process, without client and server spans).
//!
//! Every span with an agent may be some other agent's parent, so the store keeps them
//! all, in two generations of about `max_items / 2` spans and waiting children each;
//! when the newer one is full the older one is dropped whole (no per-span eviction), so
//! a span waits for its partner while between `max_items / 2` and `max_items` newer
//! ones arrive. Children still waiting when dropped are counted as unpaired.

use std::collections::HashMap;

use super::filter::KeyFilter;
use super::{Fast, Key};

/// An agent's span as the store keeps it.
#[derive(Clone, Copy, Debug)]
pub(super) struct AgentSpan {
    pub agent: u32,
    /// When the span started (Unix nanoseconds).
    pub start_ns: i64,
    pub duration_ns: i64,
    pub failed: bool,
    /// A CLIENT or PRODUCER span: its duration and status are the call's, as its
    /// caller saw it. Any other parent (an agent's whole turn) lends neither.
    pub calls: bool,
}

/// A request from one agent to another.
#[derive(Clone, Copy, Debug)]
pub(super) struct Handoff {
    pub from: u32,
    pub to: u32,
    /// When the child started.
    pub start_ns: i64,
    pub server_ns: i64,
    pub client_ns: i64,
    pub failed: bool,
}

impl Handoff {
    /// The request `parent → child`, if their agents differ.
    fn between(parent: &AgentSpan, child: &AgentSpan) -> Option<Handoff> {
        (parent.agent != child.agent).then(|| {
            let caller = if parent.calls { parent } else { child };
            Handoff {
                from: parent.agent,
                to: child.agent,
                start_ns: child.start_ns,
                server_ns: child.duration_ns,
                client_ns: caller.duration_ns,
                failed: child.failed || caller.failed,
            }
        })
    }
}

/// What arrived while it was the store's newer generation.
struct Generation {
    /// Spans by (trace id, span id), for children to come.
    spans: HashMap<Key, AgentSpan, Fast>,
    /// Children by their parent's (trace id, span id), for parents to come.
    orphans: HashMap<Key, Vec<AgentSpan>, Fast>,
    /// The keys of `spans` and of `orphans` it may hold: most lookups find nothing
    /// (a parent that is not an agent's or not kept, a span no child waits for), and
    /// a clear bit answers so without a probe of the table.
    span_keys: KeyFilter,
    orphan_keys: KeyFilter,
    /// Spans and waiting children it holds.
    len: usize,
}

impl Generation {
    fn new(items: usize) -> Generation {
        Generation {
            spans: HashMap::default(),
            orphans: HashMap::default(),
            span_keys: KeyFilter::new(items),
            orphan_keys: KeyFilter::new(items),
            len: 0,
        }
    }

    fn span(&self, key: &Key) -> Option<&AgentSpan> {
        self.span_keys
            .may_hold(key)
            .then(|| self.spans.get(key))
            .flatten()
    }

    /// Empties it, keeping its tables' room; answers the children that were waiting.
    fn clear(&mut self) -> usize {
        let waiting = self.orphans.values().map(Vec::len).sum();
        self.spans.clear();
        self.orphans.clear();
        self.span_keys.clear();
        self.orphan_keys.clear();
        self.len = 0;
        waiting
    }
}

pub(super) struct Agents {
    newer: Generation,
    older: Generation,
    half: usize,
}

impl Agents {
    pub(super) fn new(max_items: usize) -> Agents {
        let half = (max_items / 2).max(1);
        Agents {
            newer: Generation::new(half),
            older: Generation::new(half),
            half,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.newer.len + self.older.len
    }

    /// The span `key`, with `parent` if it has one: the handoffs it completes go to
    /// `out`; answers how many waiting children were forgotten to make room.
    pub(super) fn arrive(
        &mut self,
        key: Key,
        parent: Option<Key>,
        span: AgentSpan,
        out: &mut Vec<Handoff>,
    ) -> u64 {
        // Children that arrived first (none to look for where none waits: spans
        // exported parents first).
        for generation in [&mut self.newer, &mut self.older] {
            if generation.orphans.is_empty() || !generation.orphan_keys.may_hold(&key) {
                continue;
            }
            if let Some(waiting) = generation.orphans.remove(&key) {
                generation.len -= waiting.len();
                out.extend(waiting.iter().filter_map(|c| Handoff::between(&span, c)));
            }
        }
        if let Some(pk) = parent {
            let found = self.newer.span(&pk).or_else(|| self.older.span(&pk));
            if let Some(p) = found {
                out.extend(Handoff::between(p, &span));
            } else {
                self.newer.orphans.entry(pk).or_default().push(span);
                self.newer.orphan_keys.insert(&pk);
                self.newer.len += 1;
            }
        }
        if self.newer.spans.insert(key, span).is_none() {
            self.newer.span_keys.insert(&key);
            self.newer.len += 1;
        }
        if self.newer.len < self.half {
            return 0;
        }
        let forgotten = self.older.clear();
        std::mem::swap(&mut self.newer, &mut self.older);
        forgotten as u64
    }

    /// Every name a kept span refers to, for the name table's compaction.
    pub(super) fn names_mut(&mut self) -> impl Iterator<Item = &mut u32> {
        [&mut self.newer, &mut self.older]
            .into_iter()
            .flat_map(|g| g.spans.values_mut().chain(g.orphans.values_mut().flatten()))
            .map(|span| &mut span.agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(agent: u32, calls: bool) -> AgentSpan {
        AgentSpan {
            agent,
            start_ns: 0,
            duration_ns: 10 * u64::from(agent) as i64,
            failed: false,
            calls,
        }
    }

    #[test]
    fn a_partner_in_the_older_generation_still_pairs() {
        let mut agents = Agents::new(6);
        let mut out = Vec::new();
        agents.arrive(
            Key::new(1, 2),
            Some(Key::new(1, 1)),
            agent(2, false),
            &mut out,
        );
        // An unrelated span fills the newer generation (the child and its wait are
        // two items): the waiting child moves to the older one.
        assert_eq!(
            agents.arrive(Key::new(7, 7), None, agent(3, false), &mut out),
            0
        );
        assert_eq!(agents.older.len, 3);
        agents.arrive(Key::new(1, 1), None, agent(1, false), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].from, out[0].to), (1, 2));
        // The parent is an agent's turn, not a call: the edge has the child's duration.
        assert_eq!((out[0].server_ns, out[0].client_ns), (20, 20));
    }

    #[test]
    fn a_calling_parent_lends_its_duration_and_spans_of_one_agent_make_no_edge() {
        let mut agents = Agents::new(100);
        let mut out = Vec::new();
        agents.arrive(Key::new(1, 1), None, agent(1, true), &mut out);
        agents.arrive(
            Key::new(1, 2),
            Some(Key::new(1, 1)),
            agent(2, false),
            &mut out,
        );
        agents.arrive(
            Key::new(1, 3),
            Some(Key::new(1, 1)),
            agent(1, false),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].server_ns, out[0].client_ns), (20, 10));
    }

    #[test]
    fn the_store_is_bounded_and_counts_what_it_forgets() {
        let mut agents = Agents::new(4);
        let mut out = Vec::new();
        let forgotten: u64 = (0..6)
            .map(|i| {
                agents.arrive(
                    Key::new(1, 10 + i),
                    Some(Key::new(1, 1)),
                    agent(2, false),
                    &mut out,
                )
            })
            .sum();
        assert!(forgotten > 0);
        assert!(agents.len() <= 4);
    }
}
