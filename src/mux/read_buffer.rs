//! The read side of a frame stream: bytes from the peer accumulate at the end,
//! decoded frames are consumed from the front. The allocation is reused, and bytes
//! are zeroed only when the buffer grows, not on every read.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

/// See the module documentation.
pub struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    chunk: usize,
}

impl ReadBuffer {
    /// A buffer that asks for at least `chunk` bytes per read.
    pub fn new(chunk: usize) -> ReadBuffer {
        ReadBuffer {
            data: Vec::new(),
            start: 0,
            end: 0,
            chunk,
        }
    }

    /// Bytes read and not yet consumed.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.end - self.start, "consumed more than was read");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from `reader` into the free space (made room for first); 0 at EOF.
    pub async fn fill_from<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
        if self.data.len() - self.end < self.chunk {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < self.chunk {
                self.data.resize(self.end + self.chunk, 0);
            }
        }
        let n = reader.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn accumulates_consumes_and_compacts() {
        let mut source: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let mut buf = ReadBuffer::new(4);
        block_on(async {
            assert_eq!(buf.fill_from(&mut source).await.unwrap(), 4);
            assert_eq!(buf.filled(), &[1, 2, 3, 4]);
            buf.consume(3);
            assert_eq!(buf.fill_from(&mut source).await.unwrap(), 4);
            assert_eq!(buf.filled(), &[4, 5, 6, 7, 8]);
            buf.consume(5);
            assert!(buf.filled().is_empty());
            assert_eq!(buf.fill_from(&mut source).await.unwrap(), 2);
            assert_eq!(buf.filled(), &[9, 10]);
            assert_eq!(buf.fill_from(&mut source).await.unwrap(), 0);
        });
        assert!(buf.data.len() <= 12, "space is reused, not grown per read");
    }
}
