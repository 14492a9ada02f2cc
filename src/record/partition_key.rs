//! [`PartitionKey`]: a record's partition key, a string that a de-aggregated user record shares
//! with its aggregate's buffer.

use bytestring::ByteString;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// The partition key of a [`crate::Record`]: a string (it dereferences to `&str`, compares
/// with `&str` and `String`, and converts from and into `String`).
///
/// A plain record's key is the `String` the AWS SDK decoded, moved in. The user records of a
/// KPL aggregate keep their keys where the aggregate's buffer holds them: cloning one, or
/// de-aggregating an aggregate into thousands of user records, copies no key (the buffer is
/// shared, as the payloads are). Such a key keeps its aggregate's buffer alive, as the
/// record's payload does: a key kept long after its record (a map's key, say) can be made a
/// `String` of its own with [`PartitionKey::into_string`] or `String::from`.
///
/// ```
/// use kinesis_client::PartitionKey;
///
/// let key = PartitionKey::from("user-42");
/// assert_eq!(key, "user-42");
/// assert!(key.starts_with("user-"));
/// let owned: String = key.into();
/// assert_eq!(owned, "user-42");
/// ```
#[derive(Clone)]
pub struct PartitionKey(Repr);

#[derive(Clone)]
enum Repr {
    /// A string of its own.
    Owned(String),
    /// A slice of a buffer shared with others (UTF-8, checked when it was made).
    Shared(ByteString),
}

impl PartitionKey {
    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Owned(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The key as a `String` (moved out when it is one already, else copied).
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Owned(s) => s,
            Repr::Shared(s) => s.to_string(),
        }
    }

    /// A key that shares `bytes` (part of a larger buffer), or `None` if they are not UTF-8.
    pub(crate) fn shared(bytes: bytes::Bytes) -> Option<PartitionKey> {
        ByteString::try_from(bytes)
            .ok()
            .map(|s| PartitionKey(Repr::Shared(s)))
    }
}

impl Default for PartitionKey {
    fn default() -> Self {
        PartitionKey(Repr::Owned(String::new()))
    }
}

impl Deref for PartitionKey {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for PartitionKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for PartitionKey {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for PartitionKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for PartitionKey {
    fn from(s: String) -> Self {
        PartitionKey(Repr::Owned(s))
    }
}

impl From<&str> for PartitionKey {
    fn from(s: &str) -> Self {
        PartitionKey(Repr::Owned(s.to_owned()))
    }
}

impl From<&String> for PartitionKey {
    fn from(s: &String) -> Self {
        PartitionKey(Repr::Owned(s.clone()))
    }
}

impl From<PartitionKey> for String {
    fn from(k: PartitionKey) -> Self {
        k.into_string()
    }
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for PartitionKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PartitionKey {}

impl PartialOrd for PartitionKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PartitionKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for PartitionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` lets a map keyed by `PartitionKey` look up a `&str`.
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for PartitionKey {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PartitionKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for PartitionKey {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<PartitionKey> for str {
    fn eq(&self, other: &PartitionKey) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<PartitionKey> for &str {
    fn eq(&self, other: &PartitionKey) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<PartitionKey> for String {
    fn eq(&self, other: &PartitionKey) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{hash_map::DefaultHasher, HashMap};

    fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn owned_and_shared_keys_are_the_same_string() {
        let buffer = bytes::Bytes::from_static(b"..user-42..");
        let shared = PartitionKey::shared(buffer.slice(2..9)).expect("UTF-8");
        let owned = PartitionKey::from("user-42");
        assert_eq!(shared, owned);
        assert_eq!(shared, "user-42");
        assert_eq!("user-42", shared);
        assert_eq!(shared, String::from("user-42"));
        assert_eq!(hash_of(&shared), hash_of(&owned));
        assert_eq!(hash_of(&shared), hash_of("user-42"));
        assert_eq!(format!("{shared} {shared:?}"), "user-42 \"user-42\"");
        assert_eq!(shared.clone().into_string(), "user-42");
        assert_eq!(shared.cmp(&PartitionKey::from("user-5")), Ordering::Less);
        let mut map = HashMap::new();
        map.insert(shared, 1);
        assert_eq!(map.get("user-42"), Some(&1));
    }

    #[test]
    fn a_shared_key_must_be_utf8() {
        assert!(PartitionKey::shared(bytes::Bytes::from_static(&[0xff, 0x41])).is_none());
        assert_eq!(
            PartitionKey::shared(bytes::Bytes::from_static("é".as_bytes())).as_deref(),
            Some("é")
        );
    }
}
