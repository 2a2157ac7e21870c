//! One ETag, spelled one way. dav-server quotes a resource's entity tag in
//! the `ETag` header (`"2-5"`, RFC 9110 §8.8.3) but writes it bare inside a
//! PROPFIND's `<D:getetag>`; clients that compare the two (davfs2, gvfs)
//! then see every file as changed. This quotes the tags of a multistatus
//! body as it streams past, carrying a partial match over chunk borders.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

const OPEN: &[u8] = b"<D:getetag>";
const CLOSE: &[u8] = b"</D:getetag>";
/// A tag longer than this is not one of ours; pass it on untouched.
const MAX_TAG: usize = 256;

/// A response body whose `<D:getetag>` values come out quoted.
pub struct QuoteEtags<B> {
    inner: B,
    /// Bytes held back: an unfinished `<D:getetag>…` or a possible start
    /// of one at the end of the last chunk.
    carry: BytesMut,
    done: bool,
}

impl<B> QuoteEtags<B> {
    pub fn new(inner: B) -> Self {
        QuoteEtags {
            inner,
            carry: BytesMut::new(),
            done: false,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites `input`, returning what can go out now and leaving in `carry`
/// what must wait for more bytes (nothing when `last`).
fn rewrite(input: &[u8], last: bool, carry: &mut BytesMut) -> Bytes {
    let mut out = BytesMut::with_capacity(input.len() + 64);
    let mut rest = input;
    loop {
        let Some(at) = find(rest, OPEN) else {
            // Hold back a tail that could be the start of `<D:getetag>`.
            let keep = if last {
                0
            } else {
                (1..OPEN.len())
                    .rev()
                    .find(|&n| rest.len() >= n && rest.ends_with(&OPEN[..n]))
                    .unwrap_or(0)
            };
            out.extend_from_slice(&rest[..rest.len() - keep]);
            carry.extend_from_slice(&rest[rest.len() - keep..]);
            break;
        };
        let value_at = at + OPEN.len();
        match find(&rest[value_at..], CLOSE) {
            Some(len) if len <= MAX_TAG => {
                let value = &rest[value_at..value_at + len];
                out.extend_from_slice(&rest[..value_at]);
                let quoted = value.first() == Some(&b'"') || value.starts_with(b"W/");
                if !quoted {
                    out.extend_from_slice(b"\"");
                }
                out.extend_from_slice(value);
                if !quoted {
                    out.extend_from_slice(b"\"");
                }
                out.extend_from_slice(CLOSE);
                rest = &rest[value_at + len + CLOSE.len()..];
            }
            None if !last && rest.len() - value_at <= MAX_TAG => {
                // The value goes on in the next chunk.
                out.extend_from_slice(&rest[..at]);
                carry.extend_from_slice(&rest[at..]);
                break;
            }
            _ => {
                // Not a tag we wrote: pass it on as it is.
                out.extend_from_slice(&rest[..value_at]);
                rest = &rest[value_at..];
            }
        }
    }
    out.freeze()
}

impl<B> Body for QuoteEtags<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let mut input = std::mem::take(&mut this.carry);
                        input.extend_from_slice(&data);
                        let out = rewrite(&input, false, &mut this.carry);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let input = std::mem::take(&mut this.carry);
                    let mut none = BytesMut::new();
                    let out = rewrite(&input, true, &mut none);
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Quoting adds bytes: the length is no longer known.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` through the rewriter as a stream would.
    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut carry = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            let mut input = std::mem::take(&mut carry);
            input.extend_from_slice(c);
            out.extend_from_slice(&rewrite(&input, false, &mut carry));
        }
        let input = std::mem::take(&mut carry);
        out.extend_from_slice(&rewrite(&input, true, &mut BytesMut::new()));
        out
    }

    #[test]
    fn tags_are_quoted_wherever_the_chunks_break() {
        let doc = b"<D:prop><D:getetag>2-5</D:getetag><x/><D:getetag>a-1</D:getetag></D:prop>";
        let want =
            b"<D:prop><D:getetag>\"2-5\"</D:getetag><x/><D:getetag>\"a-1\"</D:getetag></D:prop>"
                .to_vec();
        assert_eq!(run(&[doc]), want);
        for cut in 0..doc.len() {
            assert_eq!(run(&[&doc[..cut], &doc[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = doc.chunks(1).collect();
        assert_eq!(run(&bytes), want);
    }

    #[test]
    fn quoted_unfinished_and_foreign_text_pass_unchanged() {
        for doc in [
            &b"<D:getetag>\"x\"</D:getetag>"[..],
            b"<D:getetag>W/\"x\"</D:getetag>",
            b"no tags at all <D:getet",
            b"<D:getetag>never closed",
        ] {
            assert_eq!(run(&[doc]), doc.to_vec());
        }
        let long = [b"<D:getetag>".as_slice(), &[b'x'; 300], b"</D:getetag>"].concat();
        assert_eq!(run(&[&long]), long);
    }
}
