//! What this CPU is and what its operating system lets a process use: the model name, the
//! instruction-set flags that decide ggml's kernels, and the OS state checks (XCR0 for AVX and
//! AVX-512 registers, the AMX tile-data permission) that CPUID alone does not tell.

use serde::{Deserialize, Serialize};

/// The flags of /proc/cpuinfo that choose between ggml's CPU variants, in its order.
const FLAGS: &[&str] = &[
    "sse4_2",
    "avx",
    "f16c",
    "fma",
    "avx2",
    "bmi2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512cd",
    "avx512vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
];

/// The CPU a run executed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// `model name` of /proc/cpuinfo ("Intel(R) Xeon(R) Processor", "AMD EPYC 7B13").
    pub model: String,
    /// The flags from [`FLAGS`] that this CPU has.
    pub flags: Vec<String>,
}

impl CpuInfo {
    /// Reads /proc/cpuinfo (empty fields where it cannot be read).
    pub fn detect() -> CpuInfo {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::parse(&text)
    }

    fn parse(cpuinfo: &str) -> CpuInfo {
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let have: Vec<String> = field("flags")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        CpuInfo {
            model: field("model name"),
            flags: FLAGS
                .iter()
                .filter(|f| have.iter().any(|h| h == *f))
                .map(|f| f.to_string())
                .collect(),
        }
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// A short key for caches: the model name and flags.
    pub fn signature(&self) -> String {
        format!("{} [{}]", self.model, self.flags.join(" "))
    }
}

/// Why the operating system will not run instructions a variant was built with, if it will not.
/// CPUID (all ggml's variant scores look at) can report AVX-512 or AMX where the kernel or the
/// hypervisor has not enabled their register state; using them then raises SIGILL.
pub fn os_refuses(features: &[String]) -> Option<String> {
    let uses = |f: &str| features.iter().any(|x| x == f);
    let xcr0 = xcr0()?;
    if uses("AVX") && xcr0 & 0b110 != 0b110 {
        return Some("the OS has not enabled the AVX registers (XCR0)".into());
    }
    if uses("AVX512") && xcr0 & 0xe0 != 0xe0 {
        return Some("the OS has not enabled the AVX-512 registers (XCR0)".into());
    }
    if uses("AMX_INT8") || uses("AMX_TILE") {
        if xcr0 & (0b11 << 17) != 0b11 << 17 {
            return Some("the OS has not enabled the AMX tile state (XCR0 bits 17-18)".into());
        }
        if let Err(e) = request_amx_permission() {
            return Some(format!(
                "Linux refused this process the AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM): {e}"
            ));
        }
    }
    None
}

/// XCR0, the register state the OS saves for processes (None where XGETBV is not available).
#[cfg(target_arch = "x86_64")]
fn xcr0() -> Option<u64> {
    use std::arch::x86_64::__cpuid;
    // CPUID.1:ECX.OSXSAVE[bit 27]: XGETBV may be executed.
    let leaf1 = __cpuid(1);
    if leaf1.ecx & (1 << 27) == 0 {
        return Some(0);
    }
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; OSXSAVE says the instruction is enabled.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    Some(u64::from(hi) << 32 | u64::from(lo))
}

#[cfg(not(target_arch = "x86_64"))]
fn xcr0() -> Option<u64> {
    None
}

/// Asks Linux for the AMX tile data state, as ggml does before its AMX kernels run
/// (permission is per process and idempotent).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn request_amx_permission() -> std::io::Result<()> {
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    // SAFETY: a plain syscall with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn request_amx_permission() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_and_the_flags_that_matter() {
        let text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n\
                    flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_tile\n\
                    processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        let cpu = CpuInfo::parse(text);
        assert_eq!(cpu.model, "Intel(R) Xeon(R) Processor");
        assert_eq!(
            cpu.flags,
            [
                "sse4_2",
                "avx",
                "fma",
                "avx2",
                "avx512f",
                "avx512_vnni",
                "amx_tile"
            ]
        );
        assert!(cpu.has("avx2") && !cpu.has("amx_int8"));
    }

    #[test]
    fn this_machine_lets_us_use_what_its_cpu_reports() {
        // On the test machines the OS enables every register state the CPU reports; a refusal
        // here would name the missing state.
        let cpu = CpuInfo::detect();
        let mut features = vec!["AVX".to_string()];
        if cpu.has("avx512f") {
            features.push("AVX512".into());
        }
        if cpu.has("amx_int8") {
            features.push("AMX_INT8".into());
        }
        if cpu.has("avx") {
            assert_eq!(os_refuses(&features), None);
        }
    }
}
