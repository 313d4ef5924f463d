//! An indexed binary min-heap of projected completions, keyed by (finish time, flow id).
//!
//! Indexed rather than lazy: every rate change moves a flow's key, and with ~20 rate changes per
//! event a lazy heap would fill with stale entries and `next_completion` would need `&mut self`.
//! Ties on time break by flow id, so the order of completions is deterministic.

/// Position marker for a slot that is not in the heap.
const ABSENT: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    finish_ns: u64,
    id: u64,
    slot: u32,
}

#[derive(Debug, Default)]
pub(crate) struct CompletionHeap {
    entries: Vec<Entry>,
    /// `pos[slot]`: index of the slot's entry in `entries`, or `ABSENT`.
    pos: Vec<u32>,
}

impl CompletionHeap {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The earliest (finish time, slot).
    pub(crate) fn peek(&self) -> Option<(u64, usize)> {
        self.entries.first().map(|e| (e.finish_ns, e.slot as usize))
    }

    /// Inserts the slot, or moves it if already present.
    pub(crate) fn set(&mut self, slot: usize, finish_ns: u64, id: u64) {
        if self.pos.len() <= slot {
            self.pos.resize(slot + 1, ABSENT);
        }
        let entry = Entry { finish_ns, id, slot: slot as u32 };
        let at = self.pos[slot];
        if at == ABSENT {
            self.entries.push(entry);
            let i = self.entries.len() - 1;
            self.pos[slot] = i as u32;
            self.sift_up(i);
        } else {
            let i = at as usize;
            let old = self.entries[i];
            self.entries[i] = entry;
            if entry < old {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
    }

    /// Removes the slot if present.
    pub(crate) fn remove(&mut self, slot: usize) {
        let Some(&at) = self.pos.get(slot) else { return };
        if at == ABSENT {
            return;
        }
        let i = at as usize;
        self.pos[slot] = ABSENT;
        let last = self.entries.len() - 1;
        if i == last {
            self.entries.pop();
            return;
        }
        let moved = self.entries[last];
        self.entries.pop();
        self.entries[i] = moved;
        self.pos[moved.slot as usize] = i as u32;
        // The moved entry may belong above or below its new place.
        self.sift_up(i);
        let j = self.pos[moved.slot as usize] as usize;
        self.sift_down(j);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.entries[i] >= self.entries[parent] {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.entries.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut min = i;
            if l < n && self.entries[l] < self.entries[min] {
                min = l;
            }
            if r < n && self.entries[r] < self.entries[min] {
                min = r;
            }
            if min == i {
                break;
            }
            self.swap(i, min);
            i = min;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.entries.swap(a, b);
        self.pos[self.entries[a].slot as usize] = a as u32;
        self.pos[self.entries[b].slot as usize] = b as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_key_order_after_updates_and_removals() {
        let mut h = CompletionHeap::default();
        let mut x = 12345u64;
        let mut model = std::collections::BTreeMap::new(); // slot -> (finish, id)
        for step in 0..2000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 64) as usize;
            if x.is_multiple_of(5) {
                h.remove(slot);
                model.remove(&slot);
            } else {
                let finish = (x >> 8) % 100;
                h.set(slot, finish, step);
                model.insert(slot, (finish, step));
            }
            let want = model.iter().map(|(s, (f, id))| (*f, *id, *s)).min().map(|(f, _, s)| (f, s));
            assert_eq!(h.peek(), want);
            assert_eq!(h.len(), model.len());
        }
    }
}
