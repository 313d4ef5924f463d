//! The connection directions of every node, looked up by (node, connection handle).
//!
//! Every event on a connection finds its direction here, so lookups are the engine's most frequent
//! operation. Nodes hand out their connection handles in sequence from 1 (`Scheduler::alloc_conn`),
//! so each node's table is a vector indexed by the handle: two loads and no hashing, where a hash
//! map keyed by (node, handle) missed the cache on most lookups at thousands of hosts. A node that
//! restarts (`[[faults]]` bounce) numbers from 1 again, on the slots its crash emptied. Handles
//! too large for a dense table (none of shoal's nodes makes them) go to an overflow map.

use super::{Conn, End, Map};

/// Handles up to this go in the dense per-node tables.
const DENSE_MAX: u64 = 1 << 22;

#[derive(Debug, Default)]
pub(super) struct Conns {
    nodes: Vec<Vec<Option<Conn>>>,
    overflow: Map<End, Conn>,
}

impl Conns {
    pub(super) fn new(nodes: usize) -> Self {
        Conns { nodes: (0..nodes).map(|_| Vec::new()).collect(), overflow: Map::default() }
    }

    #[inline]
    pub(super) fn get(&self, end: &End) -> Option<&Conn> {
        let (node, conn) = *end;
        if conn.0 > DENSE_MAX {
            return self.overflow.get(end);
        }
        self.nodes.get(node as usize)?.get(conn.0 as usize)?.as_ref()
    }

    #[inline]
    pub(super) fn get_mut(&mut self, end: &End) -> Option<&mut Conn> {
        let (node, conn) = *end;
        if conn.0 > DENSE_MAX {
            return self.overflow.get_mut(end);
        }
        self.nodes.get_mut(node as usize)?.get_mut(conn.0 as usize)?.as_mut()
    }

    pub(super) fn insert(&mut self, end: End, c: Conn) {
        let (node, conn) = end;
        if conn.0 > DENSE_MAX {
            self.overflow.insert(end, c);
            return;
        }
        let slots = &mut self.nodes[node as usize];
        let i = conn.0 as usize;
        if slots.len() <= i {
            slots.resize_with(i + 1, || None);
        }
        slots[i] = Some(c);
    }

    pub(super) fn remove(&mut self, end: &End) -> Option<Conn> {
        let (node, conn) = *end;
        if conn.0 > DENSE_MAX {
            return self.overflow.remove(end);
        }
        self.nodes.get_mut(node as usize)?.get_mut(conn.0 as usize)?.take()
    }

    /// Every direction, in no particular order (callers that act on several sort them first).
    pub(super) fn iter(&self) -> impl Iterator<Item = (End, &Conn)> {
        let dense = self.nodes.iter().enumerate().flat_map(|(n, slots)| {
            slots.iter().enumerate().filter_map(move |(i, c)| {
                c.as_ref().map(|c| ((n as u32, shoal_protocols::peer::ConnId(i as u64)), c))
            })
        });
        dense.chain(self.overflow.iter().map(|(e, c)| (*e, c)))
    }
}

impl std::ops::Index<&End> for Conns {
    type Output = Conn;

    fn index(&self, end: &End) -> &Conn {
        self.get(end).expect("a connection direction the engine holds")
    }
}
