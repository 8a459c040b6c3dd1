//! Run-time compilation with NVRTC (loaded dynamically through cudarc): CUDA C to CUBIN for one
//! architecture, with the compile log kept (register spills are read from ptxas' report), and a
//! disk cache keyed by source, options, architecture and NVRTC version, so a second process starts
//! without compiling.
//!
//! NVRTC runs without a GPU. Where it is missing, every function here returns an `Error` saying
//! so (cudarc would panic; presence is checked first).

use cudarc::nvrtc::{result, sys};
use ember_storage::{Error, Result};
use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// A compiled module.
#[derive(Clone, Debug)]
pub struct Cubin {
    /// The CUBIN image.
    pub image: Vec<u8>,
    /// NVRTC's log (ptxas' resource report included); empty when read from the disk cache.
    pub log: String,
}

impl Cubin {
    /// Bytes spilled to local memory by any kernel, from ptxas' report in the log.
    pub fn spill_bytes(&self) -> usize {
        self.log
            .lines()
            .filter_map(|l| {
                let (stores, rest) = l.split_once(" bytes spill stores")?;
                let loads = rest.split(", ").nth(1)?.split(' ').next()?.parse::<usize>().ok()?;
                Some(stores.rsplit(' ').next()?.parse::<usize>().ok()? + loads)
            })
            .sum()
    }
}

/// Whether the NVRTC library can be loaded (from `LD_LIBRARY_PATH` or the system paths).
pub fn is_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names; nothing is called.
    unsafe { sys::is_culib_present() }
}

fn require() -> Result<()> {
    if is_available() {
        Ok(())
    } else {
        Err(Error::unsupported(
            "nvrtc",
            "CUDA's NVRTC library (libnvrtc.so) was not found: install the CUDA toolkit or the \
             nvidia-cuda-nvrtc wheel and put its lib folder on LD_LIBRARY_PATH",
        ))
    }
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    require()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for writes.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::invalid("nvrtc", format!("nvrtcVersion failed: {e:?}")))?;
    Ok((major, minor))
}

/// Where the CUDA headers NVRTC needs (`cuda_fp16.h`, `cuda_bf16.h`) are: `EMBER_CUDA_INCLUDE`,
/// else `$CUDA_HOME/include`, else `/usr/local/cuda/include`.
pub fn include_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_CUDA_INCLUDE") {
        return p.into();
    }
    let home = std::env::var_os("CUDA_HOME").map(PathBuf::from).unwrap_or_else(|| "/usr/local/cuda".into());
    home.join("include")
}

/// The options every module is compiled with.
pub fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--fmad=false".into(), // the CPU backend does not contract a*b+c either
        "--ptxas-options=-v".into(),
        format!("--include-path={}", include_dir().display()),
    ]
}

/// A stable 64-bit FNV-1a hash (std's `DefaultHasher` may change between Rust releases, and the
/// key names files that outlive the process).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The disk cache's folder: `EMBER_CUDA_CACHE`, else `$XDG_CACHE_HOME/ember/cuda`, else
/// `~/.cache/ember/cuda`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EMBER_CUDA_CACHE") {
        return Some(p.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("ember").join("cuda"))
}

/// The cache file of a compile.
pub fn cache_path(src: &str, arch: &str, nvrtc: (i32, i32)) -> Option<PathBuf> {
    let opts = options(arch).join(" ");
    let ver = format!("{}.{}", nvrtc.0, nvrtc.1);
    let key = fnv1a(&[src.as_bytes(), opts.as_bytes(), arch.as_bytes(), ver.as_bytes()]);
    Some(cache_dir()?.join(format!("{key:016x}.cubin")))
}

/// Compiles `src` for `arch` (e.g. `"sm_90"`), or reads it from the disk cache.
pub fn compile_cached(src: &str, name: &str, arch: &str) -> Result<Cubin> {
    let path = cache_path(src, arch, version()?);
    if let Some(image) = path.as_ref().and_then(|p| std::fs::read(p).ok()).filter(|i| !i.is_empty()) {
        return Ok(Cubin { image, log: String::new() });
    }
    let cubin = compile(src, name, arch)?;
    if let Some(p) = path {
        // best effort, written atomically so a concurrent reader never sees half a file
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let written = p.parent().map(std::fs::create_dir_all).transpose().is_ok()
            && std::fs::write(&tmp, &cubin.image).is_ok()
            && std::fs::rename(&tmp, &p).is_ok();
        if !written {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(cubin)
}

/// Compiles `src` (named `name` in messages) to CUBIN for `arch`, always.
pub fn compile(src: &str, name: &str, arch: &str) -> Result<Cubin> {
    require()?;
    let err = |what: &str, e: &dyn std::fmt::Debug| Error::invalid("nvrtc", format!("{name}: {what}: {e:?}"));
    let csrc = CString::new(src).map_err(|e| err("source holds a NUL byte", &e))?;
    let cname = CString::new(name).map_err(|e| err("name holds a NUL byte", &e))?;
    let prog = result::create_program(&csrc, Some(&cname)).map_err(|e| err("nvrtcCreateProgram", &e))?;
    let opts = options(arch);
    // SAFETY: `prog` was created above and is destroyed once, at the end of this function;
    // `csrc` and `cname` outlive it.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(prog) }
        .map(|raw| {
            // SAFETY: NVRTC's log is NUL-terminated.
            unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned()
        })
        .unwrap_or_default();
    let image = compiled.map_err(|e| err(&format!("compile failed\n{log}"), &e)).and_then(|()| {
        let mut size = 0usize;
        // SAFETY: `prog` compiled successfully; `size` is valid for writes.
        unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }.result().map_err(|e| err("nvrtcGetCUBINSize", &e))?;
        let mut image = vec![0u8; size];
        // SAFETY: `image` holds the `size` bytes NVRTC reported.
        unsafe { sys::nvrtcGetCUBIN(prog, image.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| err("nvrtcGetCUBIN", &e))?;
        Ok(image)
    });
    // SAFETY: destroyed once; nothing uses `prog` afterwards.
    let _ = unsafe { result::destroy_program(prog) };
    Ok(Cubin { image: image?, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_are_read_from_the_ptxas_report() {
        let log = "ptxas info    : Function properties for k\n    0 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\nptxas info    : Function properties for j\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n";
        assert_eq!(Cubin { image: vec![], log: log.into() }.spill_bytes(), 20);
    }

    #[test]
    fn cache_keys_change_with_source_and_arch() {
        std::env::set_var("EMBER_CUDA_CACHE", "/tmp/ember-cuda-cache-test");
        let a = cache_path("x", "sm_90", (13, 0)).unwrap();
        assert_ne!(a, cache_path("y", "sm_90", (13, 0)).unwrap());
        assert_ne!(a, cache_path("x", "sm_80", (13, 0)).unwrap());
        assert_ne!(a, cache_path("x", "sm_90", (13, 1)).unwrap());
        assert_eq!(a, cache_path("x", "sm_90", (13, 0)).unwrap());
    }

    #[test]
    fn a_missing_nvrtc_is_an_error_not_a_panic() {
        if !is_available() {
            let e = compile("", "empty", "sm_90").unwrap_err().to_string();
            assert!(e.contains("NVRTC") && e.contains("LD_LIBRARY_PATH"), "{e}");
        } else {
            assert!(version().unwrap().0 >= 11);
        }
    }
}
