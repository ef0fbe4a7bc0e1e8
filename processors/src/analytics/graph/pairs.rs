//! Service edges as the servicegraph connector pairs them: a CLIENT (or PRODUCER) span
//! with its SERVER (or CONSUMER) child, whichever arrives first waiting for the other.
//!
//! Only spans that take part in a request wait, each under the client span's id (the
//! server's parent id), and only until their partner comes or `wait` passes. The store
//! is two generations: the newer takes what starts waiting, and every `wait` the older
//! one's leftovers expire and the newer becomes the older; a span therefore waits at
//! least `wait` and less than twice that. When `max_items` spans wait, the older
//! generation's wait is cut short (they expire at once, counted) to make room: under
//! more load than the store holds, the newest spans, whose partners are the likeliest
//! to come, keep pairing.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::filter::KeyFilter;
use super::{Fast, Key, AGENT};

/// One side of a request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Side {
    pub service: u32,
    /// When the span started (Unix nanoseconds).
    pub start_ns: i64,
    pub duration_ns: i64,
    pub failed: bool,
    /// A PRODUCER or CONSUMER span.
    pub messaging: bool,
}

/// What a waiting key holds.
#[derive(Clone, Copy)]
enum Waiting {
    /// A client span with the name of the peer it called, if it said.
    Client(Side, Option<u32>),
    Server(Side),
}

/// The servicegraph connector's `connection_type`, and ours between agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Connection {
    Direct,
    Messaging,
    Database,
    Virtual,
    /// A handoff between agents ([`super::agents`]).
    Agent,
}

impl Connection {
    pub(super) fn label(self) -> &'static str {
        match self {
            Connection::Direct => "",
            Connection::Messaging => "messaging_system",
            Connection::Database => "database",
            Connection::Virtual => "virtual_node",
            Connection::Agent => AGENT,
        }
    }
}

/// A request on an edge, its names interned.
#[derive(Clone, Copy, Debug)]
pub(super) struct Edge {
    pub client: u32,
    pub server: u32,
    pub connection: Connection,
    /// When the server side started (or the one side there is).
    pub start_ns: i64,
    pub server_ns: i64,
    pub client_ns: i64,
    pub failed: bool,
}

impl Edge {
    pub(super) fn paired(client: Side, server: Side) -> Edge {
        Edge {
            client: client.service,
            server: server.service,
            connection: if client.messaging || server.messaging {
                Connection::Messaging
            } else {
                Connection::Direct
            },
            start_ns: server.start_ns,
            server_ns: server.duration_ns,
            client_ns: client.duration_ns,
            failed: client.failed || server.failed,
        }
    }

    /// A request only one side of which is instrumented: `side` saw it all.
    pub(super) fn one_sided(client: u32, server: u32, side: Side, connection: Connection) -> Edge {
        Edge {
            client,
            server,
            connection,
            start_ns: side.start_ns,
            server_ns: side.duration_ns,
            client_ns: side.duration_ns,
            failed: side.failed,
        }
    }
}

/// What a span's arrival came to.
pub(super) enum Arrival {
    Paired(Edge),
    Waiting,
    /// Not kept: a second consumer of one message.
    Dropped,
}

pub(super) struct Pairs {
    newer: HashMap<Key, Waiting, Fast>,
    older: HashMap<Key, Waiting, Fast>,
    /// The keys each generation may hold: a span with no partner waiting (most of
    /// them) is not looked for in the older generation's table.
    newer_keys: KeyFilter,
    older_keys: KeyFilter,
    /// When the newer generation began, on the live clock.
    since: i64,
    wait_ns: i64,
    max_items: usize,
    /// What expired early to make room, until [`Pairs::expire`] hands it on: the
    /// requests to virtual nodes, the spans left unpaired, and how many were cut short.
    early: Vec<Edge>,
    early_unpaired: u64,
    cut_short: u64,
}

impl Pairs {
    pub(super) fn new(wait_ns: i64, max_items: usize, now: i64) -> Pairs {
        Pairs {
            newer: HashMap::default(),
            older: HashMap::default(),
            newer_keys: KeyFilter::new(max_items / 2),
            older_keys: KeyFilter::new(max_items / 2),
            since: now,
            wait_ns: wait_ns.max(1),
            max_items,
            early: Vec::new(),
            early_unpaired: 0,
            cut_short: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    /// Whether the newer generation has room for one more waiting span.
    fn room(&self) -> bool {
        self.newer.len() < (self.max_items / 2).max(1)
    }

    /// The span `this` waiting under `key`: paired with the partner waiting there, or
    /// waiting itself. One probe of each generation: the newer's finds the partner or
    /// the slot this one takes.
    fn arrive(&mut self, key: Key, this: Waiting) -> Arrival {
        let room = self.room();
        let found = match self.newer.entry(key) {
            Entry::Occupied(e) => Some(e.remove()),
            Entry::Vacant(slot) => {
                let older = match self.older_keys.may_hold(&key) {
                    true => self.older.remove(&key),
                    false => None,
                };
                match older {
                    None if room => {
                        slot.insert(this);
                        self.newer_keys.insert(&key);
                        return Arrival::Waiting;
                    }
                    found => found,
                }
            }
        };
        match (this, found) {
            (Waiting::Client(client, _), Some(Waiting::Server(server)))
            | (Waiting::Server(server), Some(Waiting::Client(client, _))) => {
                Arrival::Paired(Edge::paired(client, server))
            }
            (Waiting::Server(_), Some(first @ Waiting::Server(_))) => {
                // A second consumer of one message: the first keeps waiting for the
                // producer, this one is not paired.
                self.newer.insert(key, first);
                self.newer_keys.insert(&key);
                Arrival::Dropped
            }
            // No partner (the newer generation full), or the same client span sent
            // twice, whose newer copy waits: it waits, making room if it must.
            (this, _) => self.wait(key, this),
        }
    }

    fn wait(&mut self, key: Key, waiting: Waiting) -> Arrival {
        // A generation holds half the store: when the newer one is full, the older
        // one's waits are cut short and the newer takes its place.
        if !self.room() {
            self.cut_short += self.older.len() as u64;
            let mut early = std::mem::take(&mut self.early);
            self.early_unpaired += self.retire_older(&mut early);
            self.early = early;
        }
        self.newer.insert(key, waiting);
        self.newer_keys.insert(&key);
        Arrival::Waiting
    }

    /// Expires the older generation, which the newer then becomes: client spans that
    /// named their peer become requests to that virtual node, in `edges`; answers how
    /// many spans expired without a partner or a peer.
    fn retire_older(&mut self, edges: &mut Vec<Edge>) -> u64 {
        let mut unpaired = 0;
        for (_, waiting) in self.older.drain() {
            match waiting {
                Waiting::Client(side, Some(peer)) => {
                    edges.push(Edge::one_sided(
                        side.service,
                        peer,
                        side,
                        Connection::Virtual,
                    ));
                }
                _ => unpaired += 1,
            }
        }
        std::mem::swap(&mut self.newer, &mut self.older);
        std::mem::swap(&mut self.newer_keys, &mut self.older_keys);
        self.newer_keys.clear();
        // A burst's room is given back once the traffic that needed it has passed.
        let needed = self.older.len().max(1024);
        if self.newer.capacity() > 4 * needed {
            self.newer.shrink_to(needed);
        }
        unpaired
    }

    /// Spans whose wait was cut short to make room, since the last call.
    pub(super) fn take_cut_short(&mut self) -> u64 {
        std::mem::take(&mut self.cut_short)
    }

    /// Hands on what expired early to make room: its requests to virtual nodes, in
    /// `edges`; answers how many spans it left unpaired.
    pub(super) fn drain_early(&mut self, edges: &mut Vec<Edge>) -> u64 {
        edges.append(&mut self.early);
        std::mem::take(&mut self.early_unpaired)
    }

    /// A CLIENT or PRODUCER span with id `key`; `peer` names what it called.
    pub(super) fn client(&mut self, key: Key, side: Side, peer: Option<u32>) -> Arrival {
        self.arrive(key, Waiting::Client(side, peer))
    }

    /// A SERVER or CONSUMER span whose parent is `key`.
    pub(super) fn server(&mut self, key: Key, side: Side) -> Arrival {
        self.arrive(key, Waiting::Server(side))
    }

    /// Expires what waited its time at `now`: client spans that named their peer
    /// become requests to that virtual node, in `edges`; answers how many spans
    /// expired without a partner or a peer.
    pub(super) fn expire(&mut self, now: i64, edges: &mut Vec<Edge>) -> u64 {
        // What expired early first.
        let mut unpaired = self.drain_early(edges);
        // Two rounds when the store sat idle for two waits or more.
        for _ in 0..2 {
            if now.saturating_sub(self.since) < self.wait_ns {
                break;
            }
            unpaired += self.retire_older(edges);
            self.since = self
                .since
                .saturating_add(self.wait_ns)
                .max(now - self.wait_ns);
        }
        unpaired
    }

    /// Every name a waiting span refers to, for the name table's compaction.
    pub(super) fn names_mut(&mut self) -> impl Iterator<Item = &mut u32> {
        let waiting = self.newer.values_mut().chain(self.older.values_mut());
        waiting.flat_map(|w| {
            let (side, peer) = match w {
                Waiting::Client(side, peer) => (side, peer.as_mut()),
                Waiting::Server(side) => (side, None),
            };
            std::iter::once(&mut side.service).chain(peer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn side(service: u32) -> Side {
        Side {
            service,
            start_ns: 0,
            duration_ns: 5,
            failed: false,
            messaging: false,
        }
    }

    #[test]
    fn a_partner_pairs_within_the_wait_and_never_after_it() {
        let mut pairs = Pairs::new(10 * S, 100, 0);
        let mut edges = Vec::new();
        assert!(matches!(
            pairs.client(Key::new(1, 1), side(1), None),
            Arrival::Waiting
        ));
        assert_eq!(pairs.expire(9 * S, &mut edges), 0);
        assert!(matches!(
            pairs.server(Key::new(1, 1), side(2)),
            Arrival::Paired(_)
        ));
        assert_eq!(pairs.len(), 0);
        // This one waits through two rotations and expires.
        assert!(matches!(
            pairs.server(Key::new(1, 2), side(2)),
            Arrival::Waiting
        ));
        assert_eq!(pairs.expire(10 * S, &mut edges), 0);
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs.expire(20 * S, &mut edges), 1);
        assert!(matches!(
            pairs.client(Key::new(1, 2), side(1), None),
            Arrival::Waiting
        ));
        assert!(edges.is_empty());
    }

    #[test]
    fn a_second_consumer_is_dropped_and_a_client_sent_twice_waits_once() {
        let mut pairs = Pairs::new(10 * S, 100, 0);
        let consumer = |service| Side {
            messaging: true,
            ..side(service)
        };
        assert!(matches!(
            pairs.server(Key::new(1, 1), consumer(2)),
            Arrival::Waiting
        ));
        assert!(matches!(
            pairs.server(Key::new(1, 1), consumer(3)),
            Arrival::Dropped
        ));
        // The first consumer still waits, and pairs with its producer.
        match pairs.client(Key::new(1, 1), side(1), None) {
            Arrival::Paired(edge) => {
                assert_eq!((edge.client, edge.server), (1, 2));
                assert_eq!(edge.connection, Connection::Messaging);
            }
            _ => panic!("the producer pairs with the first consumer"),
        }
        // A client span sent twice waits once, as its newer copy.
        pairs.client(Key::new(2, 1), side(1), None);
        pairs.client(Key::new(2, 1), side(4), None);
        assert_eq!(pairs.len(), 1);
        match pairs.server(Key::new(2, 1), side(2)) {
            Arrival::Paired(edge) => assert_eq!(edge.client, 4),
            _ => panic!("the server pairs with the client's newer copy"),
        }
        // Whichever generation the partner waits in.
        pairs.client(Key::new(3, 1), side(1), None);
        let mut edges = Vec::new();
        assert_eq!(pairs.expire(10 * S, &mut edges), 0);
        assert!(matches!(
            pairs.server(Key::new(3, 1), side(2)),
            Arrival::Paired(_)
        ));
        assert_eq!(pairs.len(), 0);
    }

    #[test]
    fn an_unanswered_client_that_named_its_peer_makes_a_virtual_node() {
        let mut pairs = Pairs::new(10 * S, 100, 0);
        let mut edges = Vec::new();
        pairs.client(Key::new(1, 1), side(1), Some(9));
        // Idle for a long time: both generations expire at once.
        assert_eq!(pairs.expire(100 * S, &mut edges), 0);
        assert_eq!(edges.len(), 1);
        assert_eq!((edges[0].client, edges[0].server), (1, 9));
        assert_eq!(edges[0].connection, Connection::Virtual);
        assert_eq!(pairs.len(), 0);
    }

    #[test]
    fn a_full_store_cuts_the_oldest_waits_short_and_keeps_pairing_the_newest() {
        // Two generations of two.
        let mut pairs = Pairs::new(10 * S, 4, 0);
        let mut edges = Vec::new();
        pairs.client(Key::new(1, 1), side(1), Some(9));
        pairs.client(Key::new(1, 2), side(1), None);
        // The newer generation is full: it becomes the older (nothing older to expire).
        pairs.client(Key::new(1, 3), side(1), None);
        assert_eq!(pairs.take_cut_short(), 0);
        assert!(matches!(
            pairs.server(Key::new(1, 2), side(2)),
            Arrival::Paired(_)
        ));
        pairs.client(Key::new(1, 4), side(1), None);
        // Full again: (1, 1) waited longest and goes, as a request to its peer.
        pairs.client(Key::new(1, 5), side(1), None);
        assert_eq!(pairs.take_cut_short(), 1);
        assert_eq!(pairs.expire(0, &mut edges), 0);
        assert_eq!((edges.len(), edges[0].server), (1, 9));
        // And again: (1, 3) and (1, 4), which named no peer, are left unpaired.
        pairs.client(Key::new(1, 6), side(1), None);
        pairs.client(Key::new(1, 7), side(1), None);
        assert_eq!(pairs.take_cut_short(), 2);
        assert_eq!(pairs.expire(0, &mut edges), 2);
        assert!(pairs.len() <= 4);
        // The newest still pair.
        assert!(matches!(
            pairs.server(Key::new(1, 6), side(2)),
            Arrival::Paired(_)
        ));
        assert!(matches!(
            pairs.server(Key::new(1, 7), side(2)),
            Arrival::Paired(_)
        ));
    }
}
