//! Kafka message headers read through librdkafka's C API, every byte kept.
//!
//! rdkafka 0.39 reads a header's name with `CStr::to_str(..).unwrap()` in every accessor of
//! its `Headers` trait (`get`, `get_as`, `try_get`, `iter`), so a name that is not UTF-8
//! panics inside the crate. This module is the workspace's one exception to
//! `unsafe_code = "deny"`: it asks librdkafka for the message's headers
//! (`rd_kafka_message_headers`) and each header's name and value (`rd_kafka_header_get_all`)
//! itself, and copies both into owned vectors before the message can go away. Nothing is
//! interpreted here: deciding what a name that is not UTF-8 means is the caller's job
//! (`kafka::to_record` makes the record poison and keeps the name's bytes for its dead
//! letter).
//!
//! librdkafka hands a name out as a C string, so a name with a NUL byte inside is cut at the
//! first NUL; no public librdkafka call gives its full length. The Kafka protocol's header
//! key is a string, and no client we know writes a NUL into one.

#![allow(unsafe_code)]

use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;
use std::ffi::{CStr, c_char, c_void};

/// One header as the broker delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    /// The name's bytes (UTF-8 when the producer followed the protocol, not always).
    pub key: Vec<u8>,
    /// The value's bytes; `None` for a null value.
    pub value: Option<Vec<u8>>,
}

/// The headers of a polled message, in delivery order; empty when it has none.
pub fn read(message: &BorrowedMessage<'_>) -> Vec<RawHeader> {
    let mut headers: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is the `rd_kafka_message_t` the `BorrowedMessage` wraps, valid
    // for as long as `message` is borrowed here. `rd_kafka_message_headers` only reads the
    // message (parsing its headers on first use, into memory the message owns) and writes
    // a pointer to those headers into `headers`, a local; on any error it leaves `headers`
    // untouched (null). rdkafka's own `BorrowedMessage::headers` makes the same call.
    let err = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    // SAFETY: `headers` was just returned for `message`, which owns it and outlives this
    // call; nothing modifies or frees a consumed message's headers while it is borrowed.
    unsafe { read_all(headers) }
}

/// Copies every header of `headers`.
///
/// # Safety
///
/// `headers` must point to a valid `rd_kafka_headers_t` that is neither modified nor freed
/// during the call.
unsafe fn read_all(headers: *const rdsys::rd_kafka_headers_t) -> Vec<RawHeader> {
    // SAFETY: `headers` is valid (the caller's contract); the count only reads it.
    let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let mut name: *const c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size: usize = 0;
        // SAFETY: `headers` is valid and `idx < count`; the three out-pointers are locals.
        // On success librdkafka points `name` at the header's NUL-terminated name and
        // `value`/`size` at its value (null for a null value), all owned by `headers`.
        let err = unsafe {
            rdsys::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size)
        };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: `name` is non-null and NUL-terminated (librdkafka stores every name with a
        // terminating NUL), and stays valid while `headers` does; the bytes are copied
        // before returning.
        let key = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null()).then(|| {
            // SAFETY: a non-null `value` points at `size` readable bytes owned by `headers`,
            // valid while it is; they are copied before returning.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        });
        out.push(RawHeader { key, value });
    }
    out
}

/// Headers holding exactly these names and values, however the names are encoded: test data
/// that a well-behaved client cannot write (rdkafka's `OwnedHeaders::insert` takes `&str`
/// names), to prove the reader against a broker.
pub fn owned_headers(headers: &[(&[u8], Option<&[u8]>)]) -> rdkafka::message::OwnedHeaders {
    let native = Native::new(headers);
    // SAFETY: rdkafka's `BorrowedHeaders` is a zero-sized view whose address is the native
    // list (rdkafka builds it by this same cast in `BorrowedMessage::headers` and
    // `OwnedHeaders::as_borrowed`); `detach` copies the list (`rd_kafka_headers_copy`)
    // while `native` is alive, and `native` is destroyed after it.
    let borrowed = unsafe { &*(native.0 as *const rdkafka::message::BorrowedHeaders) };
    borrowed.detach()
}

/// A librdkafka headers list holding exactly these names and values, however they are
/// encoded (the safe `OwnedHeaders::insert` only takes `&str` names).
struct Native(*mut rdsys::rd_kafka_headers_t);

impl Native {
    fn new(headers: &[(&[u8], Option<&[u8]>)]) -> Self {
        // SAFETY: creates an empty list that this struct owns and destroys on drop.
        let native = Native(unsafe { rdsys::rd_kafka_headers_new(headers.len()) });
        for (name, value) in headers {
            let (value_ptr, value_len) = match value {
                Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
                None => (std::ptr::null(), 0),
            };
            // SAFETY: `native.0` is a valid list; librdkafka copies `name_size` bytes of
            // the name and `value_size` bytes of the value (none for a null value).
            let err = unsafe {
                rdsys::rd_kafka_header_add(
                    native.0,
                    name.as_ptr().cast::<c_char>(),
                    name.len() as isize,
                    value_ptr,
                    value_len,
                )
            };
            assert_eq!(
                err,
                rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                "a new header list is writable"
            );
        }
        native
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: the list was created by `rd_kafka_headers_new` and is destroyed once.
        unsafe { rdsys::rd_kafka_headers_destroy(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 10: rdkafka panics on a name that is not UTF-8; this reader keeps its bytes.
    #[test]
    fn names_that_are_not_utf8_keep_their_bytes() {
        let native = Native::new(&[
            (b"trace", Some(b"abc")),
            (b"\xff\xfekey", Some(b"v\x00\xff")),
            (b"empty", None),
            (b"", Some(b"")),
        ]);
        // SAFETY: `native` is a valid list, alive and untouched during the call.
        let read = unsafe { read_all(native.0) };
        assert_eq!(
            read,
            vec![
                RawHeader {
                    key: b"trace".to_vec(),
                    value: Some(b"abc".to_vec())
                },
                RawHeader {
                    key: b"\xff\xfekey".to_vec(),
                    value: Some(b"v\x00\xff".to_vec())
                },
                RawHeader {
                    key: b"empty".to_vec(),
                    value: None
                },
                RawHeader {
                    key: Vec::new(),
                    value: Some(Vec::new())
                },
            ]
        );
    }
}
