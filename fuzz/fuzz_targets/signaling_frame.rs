//! A WebSocket text frame as the signaling session reads it: decoded into a client message, and a
//! publish offer held against the SDP check, as `signaling/src/session.rs` does.
//!
//! Properties: never panics; an error is a value whose text is about the input (bounded by it);
//! whatever decodes describes itself back to the same message.
#![no_main]

use classroom_signaling::protocol::{self, ClientMessage, MAX_MESSAGE_BYTES};
use classroom_signaling::sdp_check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The WebSocket layer hands the session only UTF-8 text, and the session refuses longer
    // frames before decoding.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > MAX_MESSAGE_BYTES {
        return;
    }
    match protocol::decode(text) {
        Ok(msg) => {
            let _ = (msg.id(), msg.version());
            let json = match &msg {
                // Lesson actions are decoded by their own tag, beside the enum's: serialise the
                // action and put `v` and `id` back beside its fields.
                ClientMessage::Lesson { v, id, action } => {
                    let mut value = serde_json::to_value(action).expect("an action serialises");
                    if let Some(fields) = value.as_object_mut() {
                        if let Some(v) = v {
                            fields.insert("v".into(), (*v).into());
                        }
                        if let Some(id) = id {
                            fields.insert("id".into(), id.clone().into());
                        }
                    }
                    value.to_string()
                }
                _ => serde_json::to_string(&msg).expect("a decoded message serialises"),
            };
            assert_eq!(
                protocol::decode(&json).as_ref(),
                Ok(&msg),
                "round trip of {json}"
            );
            if let ClientMessage::Publish { sdp, .. } = &msg {
                let _ = sdp_check::sections(sdp);
            }
        }
        Err(e) => {
            // The message goes back to the client: it may quote the input, but nothing more.
            assert!(
                e.message.len() <= 2 * text.len() + 256,
                "{} bytes of error for {} bytes of input",
                e.message.len(),
                text.len()
            );
            assert!(!e.message.is_empty());
        }
    }
});
