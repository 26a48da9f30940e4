//! The wrappers: each consults the plan, waits or fails as it says, and forwards the call to
//! the real module with the caller's arguments untouched.
#![allow(non_snake_case)]

use crate::plan::{self, Scope};
use crate::real;
use cryptoki_sys::*;
use std::collections::HashMap;
use std::os::raw::c_void;
use std::sync::{Mutex, MutexGuard};

/// Applies the plan to one call; `forward` makes the real call and returns its answer.
fn intercept(function: &str, scope: Scope, forward: impl FnOnce() -> CK_RV) -> CK_RV {
    let decision = plan::decide(function, scope);
    if let Some(latency) = decision.latency {
        std::thread::sleep(latency);
    }
    match decision.fault {
        None => forward(),
        Some(fault) if fault.after || function.starts_with("C_Close") => {
            forward();
            fault.rv
        }
        Some(fault) => fault.rv,
    }
}

/// Generates a wrapper per function, and [`install`], which puts them in a function list.
/// `module` functions take no session; `session` functions take one first.
macro_rules! wrappers {
    ($($scope:ident fn $name:ident($($arg:ident: $type:ty),* $(,)?);)*) => {
        $(
            unsafe extern "C" fn $name($($arg: $type),*) -> CK_RV {
                // Installed only where the real module has the function.
                let Some(real_function) = real().$name else {
                    return CKR_FUNCTION_NOT_SUPPORTED;
                };
                intercept(stringify!($name), wrappers!(@scope $scope), || {
                    // SAFETY: the caller's arguments, unchanged, to the function the real
                    // module put in this entry: the caller's PKCS#11 contract is the real one's.
                    unsafe { real_function($($arg),*) }
                })
            }
        )*

        /// Replaces every entry the real module fills with its wrapper.
        pub fn install(list: &mut CK_FUNCTION_LIST) {
            $(
                if list.$name.is_some() {
                    list.$name = Some($name);
                }
            )*
            if list.C_OpenSession.is_some() {
                list.C_OpenSession = Some(C_OpenSession);
            }
            if list.C_CloseSession.is_some() {
                list.C_CloseSession = Some(C_CloseSession);
            }
            if list.C_CloseAllSessions.is_some() {
                list.C_CloseAllSessions = Some(C_CloseAllSessions);
            }
            if list.C_GetTokenInfo.is_some() {
                list.C_GetTokenInfo = Some(C_GetTokenInfo);
            }
            if list.C_Finalize.is_some() {
                list.C_Finalize = Some(C_Finalize);
            }
        }
    };
    (@scope module) => { Scope::Module };
    (@scope session) => { Scope::Session };
}

wrappers! {
    module fn C_GetSlotList(token_present: CK_BBOOL, slots: *mut CK_SLOT_ID, count: *mut CK_ULONG);
    module fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO);
    module fn C_GetMechanismList(slot: CK_SLOT_ID, list: *mut CK_MECHANISM_TYPE, count: *mut CK_ULONG);
    module fn C_GetMechanismInfo(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE, info: *mut CK_MECHANISM_INFO);
    module fn C_InitToken(slot: CK_SLOT_ID, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG, label: *mut CK_UTF8CHAR);
    module fn C_WaitForSlotEvent(flags: CK_FLAGS, slot: *mut CK_SLOT_ID, reserved: *mut c_void);
    session fn C_InitPIN(session: CK_SESSION_HANDLE, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG);
    session fn C_SetPIN(session: CK_SESSION_HANDLE, old: *mut CK_UTF8CHAR, old_len: CK_ULONG, new: *mut CK_UTF8CHAR, new_len: CK_ULONG);
    session fn C_GetSessionInfo(session: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO);
    session fn C_GetOperationState(session: CK_SESSION_HANDLE, state: *mut CK_BYTE, len: *mut CK_ULONG);
    session fn C_SetOperationState(session: CK_SESSION_HANDLE, state: *mut CK_BYTE, len: CK_ULONG, encryption_key: CK_OBJECT_HANDLE, authentication_key: CK_OBJECT_HANDLE);
    session fn C_Login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG);
    session fn C_Logout(session: CK_SESSION_HANDLE);
    session fn C_CreateObject(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, object: *mut CK_OBJECT_HANDLE);
    session fn C_CopyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, copy: *mut CK_OBJECT_HANDLE);
    session fn C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE);
    session fn C_GetObjectSize(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, size: *mut CK_ULONG);
    session fn C_GetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    session fn C_SetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    session fn C_FindObjectsInit(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    session fn C_FindObjects(session: CK_SESSION_HANDLE, objects: *mut CK_OBJECT_HANDLE, max: CK_ULONG, count: *mut CK_ULONG);
    session fn C_FindObjectsFinal(session: CK_SESSION_HANDLE);
    session fn C_EncryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    session fn C_Encrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_EncryptUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_EncryptFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DecryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    session fn C_Decrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DecryptUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DecryptFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DigestInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM);
    session fn C_Digest(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DigestUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG);
    session fn C_DigestKey(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE);
    session fn C_DigestFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_SignInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    session fn C_Sign(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_SignUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG);
    session fn C_SignFinal(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_SignRecoverInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    session fn C_SignRecover(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_VerifyInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    session fn C_Verify(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, signature: *mut CK_BYTE, signature_len: CK_ULONG);
    session fn C_VerifyUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG);
    session fn C_VerifyFinal(session: CK_SESSION_HANDLE, signature: *mut CK_BYTE, signature_len: CK_ULONG);
    session fn C_VerifyRecoverInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    session fn C_VerifyRecover(session: CK_SESSION_HANDLE, signature: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DigestEncryptUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DecryptDigestUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_SignEncryptUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_DecryptVerifyUpdate(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_GenerateKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    session fn C_GenerateKeyPair(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, public_template: *mut CK_ATTRIBUTE, public_count: CK_ULONG, private_template: *mut CK_ATTRIBUTE, private_count: CK_ULONG, public_key: *mut CK_OBJECT_HANDLE, private_key: *mut CK_OBJECT_HANDLE);
    session fn C_WrapKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, wrapping_key: CK_OBJECT_HANDLE, key: CK_OBJECT_HANDLE, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    session fn C_UnwrapKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, unwrapping_key: CK_OBJECT_HANDLE, wrapped: *mut CK_BYTE, wrapped_len: CK_ULONG, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    session fn C_DeriveKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, base_key: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    session fn C_SeedRandom(session: CK_SESSION_HANDLE, seed: *mut CK_BYTE, len: CK_ULONG);
    session fn C_GenerateRandom(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, len: CK_ULONG);
    session fn C_GetFunctionStatus(session: CK_SESSION_HANDLE);
    session fn C_CancelFunction(session: CK_SESSION_HANDLE);
}

/// Sessions open through this module, with their slots.
fn sessions() -> MutexGuard<'static, Option<HashMap<CK_SESSION_HANDLE, CK_SLOT_ID>>> {
    static SESSIONS: Mutex<Option<HashMap<CK_SESSION_HANDLE, CK_SLOT_ID>>> = Mutex::new(None);
    SESSIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    application: *mut c_void,
    notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    let Some(real_function) = real().C_OpenSession else {
        return CKR_FUNCTION_NOT_SUPPORTED;
    };
    intercept("C_OpenSession", Scope::Module, || {
        // SAFETY: the caller's arguments, unchanged, to the real module's C_OpenSession.
        let rv = unsafe { real_function(slot, flags, application, notify, session) };
        if rv == CKR_OK {
            // SAFETY: on CKR_OK the module wrote the new handle to `session`, which the
            // caller must pass valid.
            let handle = unsafe { *session };
            sessions().get_or_insert_default().insert(handle, slot);
        }
        rv
    })
}

unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    let Some(real_function) = real().C_CloseSession else {
        return CKR_FUNCTION_NOT_SUPPORTED;
    };
    intercept("C_CloseSession", Scope::Session, || {
        // SAFETY: a session handle by value; the real module checks it.
        let rv = unsafe { real_function(session) };
        if rv == CKR_OK
            && let Some(open) = sessions().as_mut()
        {
            open.remove(&session);
        }
        rv
    })
}

unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    let Some(real_function) = real().C_CloseAllSessions else {
        return CKR_FUNCTION_NOT_SUPPORTED;
    };
    intercept("C_CloseAllSessions", Scope::Module, || {
        // SAFETY: a slot id by value; the real module checks it.
        let rv = unsafe { real_function(slot) };
        if rv == CKR_OK
            && let Some(open) = sessions().as_mut()
        {
            open.retain(|_, s| *s != slot);
        }
        rv
    })
}

unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    let Some(real_function) = real().C_GetTokenInfo else {
        return CKR_FUNCTION_NOT_SUPPORTED;
    };
    intercept("C_GetTokenInfo", Scope::Module, || {
        // SAFETY: the caller's arguments, unchanged, to the real module's C_GetTokenInfo.
        let rv = unsafe { real_function(slot, info) };
        if rv == CKR_OK {
            let open = sessions()
                .as_ref()
                .map_or(0, |open| open.values().filter(|s| **s == slot).count());
            // SAFETY: on CKR_OK the module filled `*info`, so it is valid and writable.
            let info = unsafe { &mut *info };
            if info.ulSessionCount == CK_UNAVAILABLE_INFORMATION {
                info.ulSessionCount = open as CK_ULONG;
            }
        }
        rv
    })
}

/// Never failed: finalising must work for the process to end cleanly.
unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    let Some(real_function) = real().C_Finalize else {
        return CKR_FUNCTION_NOT_SUPPORTED;
    };
    // SAFETY: the caller's argument, unchanged, to the real module's C_Finalize.
    let rv = unsafe { real_function(reserved) };
    if rv == CKR_OK {
        sessions().take();
    }
    rv
}
