//! The kernel histogram layout, shared with `bpf/ksense.h`.
//!
//! Slot 0 is the zero bucket; slot `s >= 1` counts values `v` (ns) with
//! `bound(s-1) < v <= bound(s)`, where `bound(s) = floor(2^(i/4) s)` in ns and
//! `i = s + FIRST_INDEX - 1` is the Prometheus native-histogram index of
//! schema 2. So the kernel counts *are* a native histogram (and an OTLP
//! exponential histogram of scale 2, whose index is `i - 1`): no re-bucketing.

/// Number of slots per histogram (`KS_SLOTS` in bpf/ksense.h).
pub const SLOTS: usize = 256;
/// Native schema of the kernel buckets: 2^(1/4) growth.
pub const SCHEMA: i32 = 2;
/// Native index of slot 1. Chosen so the last slot (index 137, 2^34.25 s)
/// lies beyond u64::MAX ns: nothing can overflow.
pub const FIRST_INDEX: i32 = -117;
/// Native index of the last slot.
pub const LAST_INDEX: i32 = FIRST_INDEX + SLOTS as i32 - 2;

/// The per-workload layout (`struct ks_whist`, bpf/workload.h): schema 0,
/// slot `w >= 1` is native index `w + WORKLOAD_FIRST_INDEX - 1`, the union of
/// the node layout's slots `4w-7 ..= 4w-4`; slot 0 is the same zero bucket.
pub const WORKLOAD_SCHEMA: i32 = 0;
pub const WORKLOAD_SLOTS: usize = 66;
pub const WORKLOAD_FIRST_INDEX: i32 = -29;

/// Native index, in `schema` (SCHEMA or WORKLOAD_SCHEMA), of a slot (`None` for the zero bucket).
pub fn slot_index_in(schema: i32, slot: usize) -> Option<i32> {
    if schema == SCHEMA {
        return slot_index(slot);
    }
    (1..WORKLOAD_SLOTS).contains(&slot).then(|| WORKLOAD_FIRST_INDEX + slot as i32 - 1)
}

/// Upper bound of native bucket `i`, in seconds: exactly 2^(i/4).
pub fn upper_bound_seconds(i: i32) -> f64 {
    // 2^(q + r/4) with the quarter powers as correctly rounded literals: no powf.
    const QUARTER: [f64; 4] = [1.0, 1.189_207_115_002_721, std::f64::consts::SQRT_2, 1.681_792_830_507_429];
    let (q, r) = (i.div_euclid(4), i.rem_euclid(4) as usize);
    QUARTER[r] * 2f64.powi(q)
}

/// Zero-bucket threshold in seconds: the lower edge of slot 1.
pub fn zero_threshold_seconds() -> f64 {
    upper_bound_seconds(FIRST_INDEX - 1)
}

/// Native index of a slot (`None` for the zero bucket).
pub fn slot_index(slot: usize) -> Option<i32> {
    (1..SLOTS).contains(&slot).then(|| FIRST_INDEX + slot as i32 - 1)
}

/// Slot holding native index `i` (clamped to the kernel's range).
pub fn index_slot(i: i32) -> usize {
    (i.clamp(FIRST_INDEX, LAST_INDEX) - FIRST_INDEX + 1) as usize
}

/// Inclusive upper bound in ns of every slot, as the BPF programs search them.
pub fn kernel_bounds() -> &'static [u64; SLOTS] {
    static BOUNDS: std::sync::LazyLock<[u64; SLOTS]> = std::sync::LazyLock::new(|| {
        let mut b = [u64::MAX; SLOTS];
        b[0] = bound_ns(FIRST_INDEX - 1);
        for (s, v) in b.iter_mut().enumerate().skip(1) {
            *v = bound_ns(slot_index(s).expect("slot >= 1"));
        }
        b
    });
    &BOUNDS
}

/// floor(2^(i/4) * 1e9), saturating at u64::MAX. An integer v <= 2^(i/4) s
/// exactly when v <= floor(bound), so `le` semantics survive the flooring.
/// Exact: floor(x^(1/4)) = floor(floor(x)^(1/4)) for x = 2^i * 10^36, so an
/// integer fourth root does it (f64 is off by one ulp at ~1e15 ns).
fn bound_ns(i: i32) -> u64 {
    use num_bigint::BigUint;
    let e36 = BigUint::from(10u32).pow(36);
    let x = if i >= 0 { e36 << i as usize } else { e36 >> (-i) as usize };
    u64::try_from(x.nth_root(4)).unwrap_or(u64::MAX)
}

/// Slot a value (ns) lands in: the same search as `ks_slot()` in BPF.
pub fn slot_of(bounds: &[u64; SLOTS], v: u64) -> usize {
    bounds.partition_point(|&b| b < v).min(SLOTS - 1)
}

/// Native index of the smallest bound >= `seconds` (round up, so a classic
/// `le` chosen by a user is always a real kernel bound).
pub fn index_at_or_above(seconds: f64) -> i32 {
    let mut i = (4.0 * seconds.log2()).ceil() as i32;
    // log2 is not exact: step to the true smallest bound >= seconds.
    while upper_bound_seconds(i - 1) >= seconds {
        i -= 1;
    }
    while upper_bound_seconds(i) < seconds {
        i += 1;
    }
    i.clamp(FIRST_INDEX, LAST_INDEX)
}

/// The default classic `le` bounds: every 8th native index from 2^-20 s
/// (~0.95 µs) to 2^4 s (16 s), 13 buckets plus +Inf.
pub fn default_classic_indices() -> Vec<i32> {
    (-80..=16).step_by(8).collect()
}

/// The default per-workload `le` bounds: every 12th native index (factor 8)
/// from 2^-12 s (244 µs) to 1 s, 5 buckets plus +Inf, so that a histogram
/// per workload costs 8 series, not 16. Waits under 244 µs are healthy for a
/// run queue; the resolution is in the native histograms.
pub fn default_workload_classic_indices() -> Vec<i32> {
    (-48..=0).step_by(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigUint;

    /// bound_ns must be floor(2^(i/4) * 1e9) exactly: check T^4 <= 2^i 1e36 < (T+1)^4
    /// in exact integer arithmetic (scaled by 2^-i for negative i).
    #[test]
    fn kernel_bounds_are_exact_floors() {
        let b = kernel_bounds();
        let e36 = BigUint::from(10u32).pow(36);
        for (s, &t) in b.iter().enumerate() {
            let i = if s == 0 { FIRST_INDEX - 1 } else { slot_index(s).unwrap() };
            if t == u64::MAX {
                // Saturated: the true bound must be beyond u64::MAX.
                let m = BigUint::from(u64::MAX);
                assert!(i >= 0 && m.pow(4) < (BigUint::from(1u32) << i as usize) * &e36, "slot {s}");
                continue;
            }
            let (lo, hi) = (BigUint::from(t).pow(4), BigUint::from(t + 1).pow(4));
            let (lhs_scale, rhs) = if i >= 0 {
                (BigUint::from(1u32), (BigUint::from(1u32) << i as usize) * &e36)
            } else {
                (BigUint::from(1u32) << (-i) as usize, e36.clone())
            };
            assert!(&lo * &lhs_scale <= rhs, "slot {s} (i={i}) bound {t} too high");
            assert!(&hi * &lhs_scale > rhs, "slot {s} (i={i}) bound {t} too low");
        }
    }

    #[test]
    fn bounds_strictly_increase_and_cover_u64() {
        let b = kernel_bounds();
        assert_eq!(b[0], 1, "zero bucket holds 0 and 1 ns");
        // Below a few ns some quarter-octaves hold no integer: equal bounds, empty slots.
        for w in b.windows(2) {
            assert!(w[0] <= w[1] && (w[0] < 4 || w[0] < w[1]), "{w:?}");
        }
        assert_eq!(b[SLOTS - 1], u64::MAX);
        assert_eq!(slot_of(b, u64::MAX), SLOTS - 1);
        assert_eq!(slot_of(b, 0), 0);
    }

    #[test]
    fn value_equal_to_bound_rounds_up_into_that_bucket() {
        let b = kernel_bounds();
        // 1 s = 2^0 is index 0; 1 ms is not a bound, 2^-10 s = 976562.5 ns floors to 976562.
        assert_eq!(slot_index(slot_of(b, 1_000_000_000)), Some(0));
        assert_eq!(slot_index(slot_of(b, 1_000_000_001)), Some(1));
        assert_eq!(slot_index(slot_of(b, 976_562)), Some(-40));
        assert_eq!(slot_index(slot_of(b, 976_563)), Some(-39));
    }

    /// The BPF side's `(s + 5) >> 2`: each workload slot is exactly the union
    /// of four node slots, i.e. schema-2 index i lands in schema-0 index ceil(i/4).
    #[test]
    fn workload_slots_merge_node_slots() {
        assert_eq!(slot_index_in(WORKLOAD_SCHEMA, 0), None);
        for s in 1..SLOTS {
            let w = (s + 5) >> 2;
            let (i, j) = (slot_index(s).unwrap(), slot_index_in(WORKLOAD_SCHEMA, w).unwrap());
            assert_eq!(j, i.div_euclid(4) + i32::from(i.rem_euclid(4) != 0), "slot {s}");
            assert!(w < WORKLOAD_SLOTS);
        }
        assert_eq!((SLOTS - 1 + 5) >> 2, WORKLOAD_SLOTS - 1, "the last slots meet");
    }

    #[test]
    fn range_covers_one_microsecond_to_thirty_seconds() {
        assert!(zero_threshold_seconds() < 1e-6);
        assert!(upper_bound_seconds(LAST_INDEX) > 30.0);
    }

    #[test]
    fn index_at_or_above_rounds_up_to_real_bounds() {
        assert_eq!(index_at_or_above(1.0), 0);
        assert_eq!(index_at_or_above(1.0000001), 1);
        assert_eq!(index_at_or_above(0.25), -8);
        assert_eq!(index_at_or_above(0.001), -39);
        for i in -100..100 {
            assert_eq!(index_at_or_above(upper_bound_seconds(i)), i);
        }
    }
}
