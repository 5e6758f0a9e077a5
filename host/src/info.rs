//! `cryptonets info`.

use cryptonets_core::Backend;

/// CPU features that matter to the kernels, with whether this CPU has them.
fn cpu_features() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        vec![
            ("sse4.1", std::arch::is_x86_feature_detected!("sse4.1")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("bmi2", std::arch::is_x86_feature_detected!("bmi2")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            (
                "avx512ifma",
                std::arch::is_x86_feature_detected!("avx512ifma"),
            ),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        vec![
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("sve", std::arch::is_aarch64_feature_detected!("sve")),
        ]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}

pub(crate) fn run(backend: Option<&str>) -> Result<(), String> {
    let in_use = crate::selected_backend(backend)?;
    println!("cryptonets {}", env!("CARGO_PKG_VERSION"));
    println!("architecture: {}", std::env::consts::ARCH);
    let features: Vec<String> = cpu_features()
        .into_iter()
        .map(|(name, present)| format!("{name}{}", if present { "+" } else { "-" }))
        .collect();
    println!("cpu features: {}", features.join(" "));
    let available: Vec<&str> = Backend::available().iter().map(|b| b.name()).collect();
    println!("backends available: {}", available.join(", "));
    #[cfg(target_arch = "x86_64")]
    let (fused, tiles) = match in_use {
        Backend::Avx512(avx512) => (avx512.has_vnni(), avx512.has_amx()),
        _ => (false, false),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (fused, tiles) = (false, false);
    let fused = match (fused, tiles) {
        (true, true) => {
            " (linear layers on fused VNNI multiply-adds, dense layers with byte weights on AMX-INT8 tiles)"
        }
        (true, false) => " (linear layers on fused VNNI multiply-adds)",
        _ => "",
    };
    println!("backend in use: {in_use}{fused}");
    println!(
        "threads: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(())
}
