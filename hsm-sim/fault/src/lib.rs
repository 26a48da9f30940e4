//! A PKCS#11 module that stands in front of a real one (SoftHSM2) and makes it fail on command.
//!
//! `C_GetFunctionList` loads the real module (`KEYHAVEN_FAULT_REAL_MODULE`, else the first
//! SoftHSM2 found where `hsm-sim/setup.sh` looks), copies its function list and replaces every
//! entry but `C_Initialize`, `C_GetInfo` and `C_GetFunctionList` with a wrapper that consults
//! the fault plan (see [`plan`]) and then forwards the call. `C_Finalize` is never failed.
//!
//! Two departures from plain forwarding, both to keep the real module's state honest:
//! - `C_CloseSession` and `C_CloseAllSessions` are always forwarded, even when the plan fails
//!   them (a failing device loses its sessions; it does not keep them open for ever).
//! - `CK_TOKEN_INFO.ulSessionCount`, which SoftHSM2 does not report, is the number of sessions
//!   open through this module on that slot, so that a test can see whether a pool leaks them.
//!
//! One copy of the state per process: PKCS#11 modules are loaded once per process.

mod forward;
mod plan;

use cryptoki_sys::{
    CK_FUNCTION_LIST, CK_FUNCTION_LIST_PTR_PTR, CK_RV, CKR_ARGUMENTS_BAD, CKR_GENERAL_ERROR, CKR_OK,
};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where `hsm-sim/setup.sh` looks for SoftHSM2.
const SOFTHSM2_CANDIDATES: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The real module, loaded for good: its function pointers must stay valid.
struct RealModule {
    _library: libloading::Library,
    list: CK_FUNCTION_LIST,
}

/// The real module and the list handed out in its place.
struct Modules {
    real: RealModule,
    wrapped: CK_FUNCTION_LIST,
}

fn real_module_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("KEYHAVEN_FAULT_REAL_MODULE") {
        return Ok(path.into());
    }
    SOFTHSM2_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| "no KEYHAVEN_FAULT_REAL_MODULE and no SoftHSM2 installed".to_owned())
}

fn load_real_module() -> Result<RealModule, String> {
    let path = real_module_path()?;
    // SAFETY: loading a shared library runs its initialisers; the library is the PKCS#11
    // module the test set-up named, which is meant to be loaded into this process.
    let library = unsafe { libloading::Library::new(&path) }
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    let mut list = std::ptr::null_mut();
    {
        // SAFETY: `C_GetFunctionList` has this signature in every PKCS#11 module (section
        // 5.2 of the standard); the symbol does not outlive `library`.
        let get_function_list = unsafe {
            library.get::<unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV>(
                b"C_GetFunctionList\0",
            )
        }
        .map_err(|e| format!("{} has no C_GetFunctionList: {e}", path.display()))?;
        // SAFETY: `list` is a valid place for the module to write one pointer to.
        let rv = unsafe { get_function_list(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err(format!(
                "C_GetFunctionList of {} answered {rv:#x}",
                path.display()
            ));
        }
    }
    // SAFETY: the module answered CKR_OK with a non-null pointer to its function list, which
    // stays valid while the library is loaded; we copy it by value.
    let list = unsafe { *list };
    Ok(RealModule {
        _library: library,
        list,
    })
}

fn modules() -> Result<&'static Modules, &'static str> {
    static MODULES: OnceLock<Result<Modules, String>> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            let real = load_real_module()?;
            let mut wrapped = real.list;
            forward::install(&mut wrapped);
            wrapped.C_GetFunctionList = Some(C_GetFunctionList);
            Ok(Modules { real, wrapped })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The real module's function list. Wrappers are installed only once it has loaded.
fn real() -> &'static CK_FUNCTION_LIST {
    match modules() {
        Ok(modules) => &modules.real.list,
        // Unreachable: no wrapper is handed out before the real module loaded.
        Err(_) => std::process::abort(),
    }
}

/// The module's entry point: the real module's function list with every entry wrapped.
///
/// # Safety
/// `list` must be null or point to writable memory for one pointer (as the standard says).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    match modules() {
        Ok(modules) => {
            // SAFETY: `list` is non-null and, by the caller's contract, writable. The list is
            // in a static that lives as long as the process; callers only read through it.
            unsafe { *list = std::ptr::from_ref(&modules.wrapped).cast_mut() };
            CKR_OK
        }
        Err(error) => {
            eprintln!("keyhaven-hsm-fault: {error}");
            CKR_GENERAL_ERROR
        }
    }
}
