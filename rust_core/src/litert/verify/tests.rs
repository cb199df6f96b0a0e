use super::*;

/// A CBAM model exported with `to_tflite(..., fused_attention=True)`: one KerasAttnCBAM node.
const MODEL: &[u8] = include_bytes!("cbam_fused.tflite");

#[test]
fn an_exported_model_verifies() {
    verify_model(MODEL).unwrap();
}

#[test]
fn truncated_files_are_refused() {
    assert!(verify_model(&MODEL[..7]).unwrap_err().contains("too few"));
    let mut wrong_id = MODEL.to_vec();
    wrong_id[4] = b'X';
    assert!(verify_model(&wrong_id).unwrap_err().contains("TFL3"));
    // Every cut past the identifier loses a table, a vector or a buffer's bytes (the last 32
    // bytes are the exporter's padding after the last buffer).
    for len in (8..MODEL.len() - 32).step_by(7) {
        assert!(verify_model(&MODEL[..len]).is_err(), "{len} bytes");
    }
}

#[test]
fn a_root_offset_out_of_the_file_is_refused() {
    let mut bad = MODEL.to_vec();
    bad[..4].copy_from_slice(&(MODEL.len() as u32).to_le_bytes());
    assert!(verify_model(&bad).unwrap_err().contains("outside the file"), "{:?}", verify_model(&bad));
}

/// A seeded fuzz loop: changed bytes give an error or pass, and never panic (a panic fails the
/// test) nor read out of the buffer.
#[test]
fn mutants_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut refused, total) = (0, 20_000);
    for _ in 0..total {
        let mut bytes = MODEL.to_vec();
        for _ in 0..1 + next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        if next() % 10 == 0 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        }
        refused += verify_model(&bytes).is_err() as usize;
    }
    // Most bytes of a model are offsets, sizes and indices the verifier checks.
    assert!(refused > total / 4, "{refused} of {total} refused");
}
