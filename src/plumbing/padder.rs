//! The padding scheme applied to a session's writes: the first `stop` writes are
//! cut into the records the scheme asks for (sizes drawn from its ranges, `c`
//! marks ending the packet early). Clients shape their writes with it (and the
//! scheme can be replaced mid-session by UpdatePaddingScheme); the server shapes
//! its own with the scheme it tells clients (`--downlink-padding`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::proto::padding::{self, PaddingScheme};

/// A padding scheme that can be replaced while sessions use it (UpdatePaddingScheme).
pub type SharedScheme = Rc<RefCell<Arc<PaddingScheme>>>;

/// Shapes the first `stop` writes of a session per its padding scheme (see
/// [`super::write_loop`]).
pub struct Padder {
    scheme: SharedScheme,
    /// Packet 0 is the authentication, so session writes start at 1.
    packet: u32,
    done: bool,
    rng: SmallRng,
}

impl Padder {
    /// A padder for a new session.
    pub fn new(scheme: SharedScheme) -> Padder {
        Padder {
            scheme,
            packet: 0,
            done: false,
            rng: SmallRng::from_entropy(),
        }
    }

    /// A padder for a new session whose scheme never changes (the server's).
    pub fn fixed(scheme: Arc<PaddingScheme>) -> Padder {
        Padder::new(Rc::new(RefCell::new(scheme)))
    }

    /// The records one session write becomes; `None` once shaping has stopped
    /// for good.
    pub fn shape(&mut self, batch: &[u8]) -> Option<Vec<Vec<u8>>> {
        if self.done {
            return None;
        }
        self.packet += 1;
        let scheme = self.scheme.borrow().clone();
        if self.packet >= scheme.stop() {
            self.done = true;
            return None;
        }
        let steps = scheme.record_sizes(self.packet, &mut self.rng);
        Some(padding::shape(batch, &steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padder_shapes_until_stop() {
        let scheme = PaddingScheme::parse(b"stop=3\n1=100-100\n2=50-50").unwrap();
        let mut padder = Padder::fixed(Arc::new(scheme));
        let first = padder.shape(&[1u8; 10]).unwrap();
        assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), vec![100]);
        let second = padder.shape(&[1u8; 80]).unwrap();
        assert_eq!(
            second.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![50, 30]
        );
        assert!(padder.shape(&[1u8; 10]).is_none());
        assert!(padder.shape(&[1u8; 10]).is_none());
    }
}
