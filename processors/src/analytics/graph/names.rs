//! The graph stores' names (services, agents, virtual nodes) as small numbers, so a
//! waiting span costs a few words rather than owned strings.

use std::collections::HashMap;

use super::Fast;
use crate::columns::Text;

/// The fewest names the table holds before it is compacted.
pub(super) const MIN_NAMES: usize = 10_000;

#[derive(Default)]
pub(super) struct Names {
    ids: HashMap<String, u32, Fast>,
    by_id: Vec<String>,
    /// How many names the table may hold before the unused ones are dropped.
    compact_at: usize,
}

impl Names {
    pub(super) fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.by_id.len() as u32;
        self.by_id.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// [`Names::intern`], answered from `recent` when `name` is the name interned last
    /// through it (valid until the table is compacted).
    pub(super) fn intern_recent<'a>(
        &mut self,
        recent: &mut Option<(&'a str, u32)>,
        name: &'a str,
    ) -> u32 {
        match *recent {
            Some((last, id)) if Text(last) == Text(name) => id,
            _ => {
                let id = self.intern(name);
                *recent = Some((name, id));
                id
            }
        }
    }

    pub(super) fn name(&self, id: u32) -> &str {
        self.by_id.get(id as usize).map_or("", String::as_str)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the table has doubled since it was last compacted.
    pub(super) fn wants_compaction(&self) -> bool {
        self.by_id.len() >= self.compact_at.max(MIN_NAMES)
    }

    /// Keeps only the names `in_use` refer to, renumbering those references: services
    /// and agents that churn cost no memory once no waiting span names them.
    pub(super) fn compact<'a>(&mut self, in_use: impl Iterator<Item = &'a mut u32>) {
        let mut remap: HashMap<u32, u32, Fast> = HashMap::default();
        let mut by_id = Vec::new();
        let old = std::mem::take(&mut self.by_id);
        for id in in_use {
            let next = by_id.len() as u32;
            *id = *remap.entry(*id).or_insert_with(|| {
                by_id.push(old.get(*id as usize).cloned().unwrap_or_default());
                next
            });
        }
        self.ids = by_id
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        self.compact_at = 2 * by_id.len();
        self.by_id = by_id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_and_renumbers_what_is_in_use() {
        let mut names = Names::default();
        let mut kept: Vec<u32> = (0..MIN_NAMES)
            .map(|i| names.intern(&format!("n{i}")))
            .filter(|id| id % 1000 == 7)
            .collect();
        assert!(names.wants_compaction());
        names.compact(kept.iter_mut());
        assert_eq!(names.len(), kept.len());
        assert_eq!(names.name(kept[1]), "n1007");
        assert_eq!(names.intern("n1007"), kept[1]);
        assert!(!names.wants_compaction());
    }
}
