//! Where tensors live.
//!
//! burn 0.22 dropped the backend type parameter: the backend is a property of the
//! [`Device`] value, and autodiff is a decoration of it (`device.autodiff()`). So this crate
//! takes a `Device` where it matters ([`crate::train_on`], [`crate::Classifier::from_artifact_on`])
//! and [`cpu`] is the default. A GPU backend is one cargo feature of `burn` plus a
//! different `Device` passed in; nothing else changes.

use burn::tensor::Device;

/// The CPU device used by default: burn's ndarray backend.
///
/// ndarray is deprecated in burn 0.22 in favour of `flex`, but it is the backend the
/// project pins and has measured; switching is this one line.
#[allow(deprecated)]
pub fn cpu() -> Device {
    Device::ndarray()
}
