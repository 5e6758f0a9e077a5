//! Device profiles (what a microcontroller client reads of a model's single-image plan):
//! refused, or read faithfully (the bytes are canonical); a channel built from one is checked
//! (primes, security bound, id) and encodes without panicking whatever its levels.
#![no_main]
use cryptonets_core::network::single::DeviceProfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = DeviceProfile::from_bytes(data) {
        assert_eq!(profile.to_bytes(), data);
        assert!(profile.input.iter().all(|&(neuron, column)| {
            (neuron as usize) < profile.pixels && (column as usize) < profile.n / 2
        }));
        if let Ok(channel) = profile.compact_channel(0) {
            assert_eq!(channel.id(), profile.channel_ids[0]);
            if profile.pixels <= 4096 {
                let image: Vec<u8> = (0..profile.pixels).map(|i| i as u8).collect();
                let mut m = vec![0u32; profile.n];
                profile
                    .encode_into(&channel, &image, &mut m)
                    .expect("a valid profile's image encodes");
                let t = channel.plaintext_modulus().value();
                assert!(m.iter().all(|&x| x < t));
            }
        }
    }
});
