//! Every table swarmscope stores, from their owners: the received signals declared in
//! [`crate::schema`], and the derived tables each declared by the analytics that
//! derives it. Only this module knows them all, so neither the schema nor the
//! analytics depend on each other's tables.

use crate::schema::Table;

impl Table {
    /// Every table, in the order `GET /api/v1/tables` lists them.
    pub const ALL: &'static [Table] = &[
        Table::SPANS,
        Table::METRICS,
        Table::LOGS,
        crate::analytics::coordination::COORDINATION_EVENTS,
        crate::analytics::health::HEALTH,
        crate::analytics::alerts::ALERTS,
        Table::DEAD_LETTERS,
        crate::analytics::genai::GENAI_ATTRIBUTION,
        crate::analytics::graph::GRAPH_EDGES,
    ];

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.iter().copied().find(|t| t.name() == name)
    }

    pub fn from_code(code: u8) -> Option<Table> {
        Table::ALL.iter().copied().find(|t| t.code() == code)
    }
}
