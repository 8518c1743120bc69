//! sensebind's ROS 2 node on the daemon's zenoh session: one node (`NN` token) for the
//! whole process, shared by every `ros2` source and the ROS 2 outputs, handing out the
//! entity ids of its publishers and subscriptions so `ros2 topic info -v` lists each
//! once.
//!
//! Sources are built before the bus opens; they hold a [`Slot`] that the graph fills
//! with the [`Participant`] once the session is up. A source that finds its slot empty
//! (an offline tool, or the bus failed) reports an open error and is retried.

use super::wire::{Distro, EndpointKind, KnownType, Node};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use zenoh::liveliness::LivelinessToken;
use zenoh::Wait;

/// The node and its session.
pub struct Participant {
    session: zenoh::Session,
    node: Node,
    distro: Distro,
    next_entity: AtomicU32,
    _token: LivelinessToken,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("node", &self.node)
            .field("distro", &self.distro)
            .finish_non_exhaustive()
    }
}

/// An endpoint's liveliness token, kept alive as long as the endpoint.
pub struct Endpoint {
    /// The entity id within the node.
    pub id: u32,
    /// The publisher GID rmw_zenoh puts in each sample's attachment.
    pub gid: [u8; 16],
    _token: LivelinessToken,
}

impl Participant {
    /// Declare the node `namespace`/`name` on `domain` (its `NN` token).
    pub async fn join(
        session: zenoh::Session,
        domain: u32,
        namespace: &str,
        name: &str,
        distro: Distro,
    ) -> Result<Arc<Participant>, String> {
        let node = Node {
            domain,
            zid: session.zid().to_string(),
            id: 0,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let key = node.token();
        let token = session
            .liveliness()
            .declare_token(key.clone())
            .await
            .map_err(|e| format!("ROS 2 node token `{key}`: {e}"))?;
        Ok(Arc::new(Participant {
            session,
            node,
            distro,
            next_entity: AtomicU32::new(1),
            _token: token,
        }))
    }

    pub fn session(&self) -> &zenoh::Session {
        &self.session
    }
    pub fn domain(&self) -> u32 {
        self.node.domain
    }
    pub fn distro(&self) -> Distro {
        self.distro
    }
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// A new publisher or subscription of this node on `topic`, declared in the graph
    /// (blocking: called from source threads and at start).
    pub fn endpoint(&self, kind: EndpointKind, topic: &str, t: KnownType, depth: u32) -> Result<Endpoint, String> {
        let id = self.next_entity.fetch_add(1, Ordering::Relaxed);
        let key = self.node.endpoint_token(id, kind, topic, t, self.distro, depth);
        let token = self
            .session
            .liveliness()
            .declare_token(key.clone())
            .wait()
            .map_err(|e| format!("ROS 2 graph token `{key}`: {e}"))?;
        Ok(Endpoint {
            id,
            gid: self.gid(id),
            _token: token,
        })
    }

    /// A GID for entity `id`: the session id with the entity id in its last 4 bytes
    /// (unique per endpoint of this process; rmw_zenoh only compares GIDs).
    fn gid(&self, id: u32) -> [u8; 16] {
        let mut g = self.session.zid().to_le_bytes();
        for (b, x) in g[12..].iter_mut().zip(id.to_le_bytes()) {
            *b ^= x;
        }
        g
    }
}

/// Where sources find the node once the daemon's bus is open.
#[derive(Clone, Default, Debug)]
pub struct Slot(Arc<OnceLock<Arc<Participant>>>);

impl Slot {
    /// Put the node in (once; later calls keep the first).
    pub fn fill(&self, p: Arc<Participant>) {
        let _ = self.0.set(p);
    }
    pub fn get(&self) -> Option<Arc<Participant>> {
        self.0.get().cloned()
    }
}
