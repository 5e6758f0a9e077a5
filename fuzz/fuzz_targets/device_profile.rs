//! Device profiles (what a microcontroller client reads of a model's single-image plan):
//! refused, or read faithfully (the bytes are canonical).
#![no_main]
use cryptonets_core::network::single::DeviceProfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = DeviceProfile::from_bytes(data) {
        assert_eq!(profile.to_bytes(), data);
        assert!(profile.input.iter().all(|&(neuron, column)| {
            (neuron as usize) < profile.pixels && (column as usize) < profile.n / 2
        }));
    }
});
