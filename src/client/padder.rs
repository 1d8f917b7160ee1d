//! The client's side of the padding scheme: the first `stop` writes of a session
//! are cut into the records the scheme asks for (sizes drawn from its ranges, `c`
//! marks ending the packet early), and the scheme can be replaced mid-session by
//! UpdatePaddingScheme.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::plumbing::Shaper;
use crate::proto::padding::{self, PaddingScheme};

/// A padding scheme that can be replaced while sessions use it (UpdatePaddingScheme).
pub type SharedScheme = Rc<RefCell<Arc<PaddingScheme>>>;

/// Shapes the first `stop` writes of a session per its padding scheme.
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
}

impl Shaper for Padder {
    fn shape(&mut self, batch: &[u8]) -> Option<Vec<Vec<u8>>> {
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
        let mut padder = Padder::new(Rc::new(RefCell::new(Arc::new(scheme))));
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
