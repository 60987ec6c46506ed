//! The twelve subscribable event types and the bitmask that holds a
//! connection's subscriptions.
//!
//! Owns the wire names of events and their bit positions. It must not know
//! about connections or shards: the subscriber index lives in `hub::shard`.

use std::fmt;

/// A subscribable event type. The discriminants are bit positions, assigned
/// in alphabetical order of the wire names so that iterating an
/// [`EventSet`] yields names already sorted (the SPEC asks for sorted
/// `subscriptions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Event {
    FileProcessing = 0,
    FileReady = 1,
    ReviewCreated = 2,
    ReviewDeleted = 3,
    ReviewUpdated = 4,
    SystemMaintenance = 5,
    SystemNotification = 6,
    UploadCancelled = 7,
    UploadCompleted = 8,
    UploadError = 9,
    UploadProgress = 10,
    UserStatusChanged = 11,
}

impl Event {
    /// Every event, in bit (and alphabetical) order.
    pub const ALL: [Event; 12] = [
        Event::FileProcessing,
        Event::FileReady,
        Event::ReviewCreated,
        Event::ReviewDeleted,
        Event::ReviewUpdated,
        Event::SystemMaintenance,
        Event::SystemNotification,
        Event::UploadCancelled,
        Event::UploadCompleted,
        Event::UploadError,
        Event::UploadProgress,
        Event::UserStatusChanged,
    ];

    /// How many events there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The wire name, e.g. `upload.progress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::FileProcessing => "file.processing",
            Event::FileReady => "file.ready",
            Event::ReviewCreated => "review.created",
            Event::ReviewDeleted => "review.deleted",
            Event::ReviewUpdated => "review.updated",
            Event::SystemMaintenance => "system.maintenance",
            Event::SystemNotification => "system.notification",
            Event::UploadCancelled => "upload.cancelled",
            Event::UploadCompleted => "upload.completed",
            Event::UploadError => "upload.error",
            Event::UploadProgress => "upload.progress",
            Event::UserStatusChanged => "user.status_changed",
        }
    }

    /// Case-sensitive lookup of a wire name.
    pub fn parse(name: &str) -> Option<Event> {
        Self::ALL.iter().copied().find(|e| e.as_str() == name)
    }

    /// The bit position, an index into [`Event::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of events as a 12-bit mask: two bytes per connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventSet(u16);

impl EventSet {
    pub const EMPTY: EventSet = EventSet(0);

    pub fn contains(self, event: Event) -> bool {
        self.0 & event.bit() != 0
    }

    pub fn insert(&mut self, event: Event) {
        self.0 |= event.bit();
    }

    #[cfg(test)]
    pub fn remove(&mut self, event: Event) {
        self.0 &= !event.bit();
    }

    pub fn union(self, other: EventSet) -> EventSet {
        EventSet(self.0 | other.0)
    }

    pub fn difference(self, other: EventSet) -> EventSet {
        EventSet(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    #[cfg(test)]
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Events in the set, sorted by wire name.
    pub fn iter(self) -> impl Iterator<Item = Event> {
        Event::ALL.into_iter().filter(move |e| self.contains(*e))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Event::as_str).collect()
    }
}

impl FromIterator<Event> for EventSet {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> Self {
        let mut set = EventSet::EMPTY;
        for event in iter {
            set.insert(event);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for event in Event::ALL {
            assert_eq!(Event::parse(event.as_str()), Some(event));
        }
        assert_eq!(Event::parse("UPLOAD.PROGRESS"), None);
        assert_eq!(Event::parse("upload"), None);
    }

    #[test]
    fn bit_order_is_alphabetical() {
        let names: Vec<_> = Event::ALL.iter().map(|e| e.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn set_operations() {
        let mut set: EventSet = [Event::UploadProgress, Event::FileReady]
            .into_iter()
            .collect();
        assert!(set.contains(Event::FileReady));
        assert!(!set.contains(Event::ReviewCreated));
        assert_eq!(set.names(), vec!["file.ready", "upload.progress"]);
        set.remove(Event::FileReady);
        assert_eq!(set.names(), vec!["upload.progress"]);
        let other: EventSet = [Event::UploadProgress].into_iter().collect();
        assert!(set.difference(other).is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        #[derive(Debug, Clone)]
        enum Op {
            Insert(Event),
            Remove(Event),
            Union(Vec<Event>),
            Difference(Vec<Event>),
        }

        fn any_event() -> impl Strategy<Value = Event> {
            (0..Event::COUNT).prop_map(|i| Event::ALL[i])
        }

        fn any_op() -> impl Strategy<Value = Op> {
            prop_oneof![
                any_event().prop_map(Op::Insert),
                any_event().prop_map(Op::Remove),
                prop::collection::vec(any_event(), 0..6).prop_map(Op::Union),
                prop::collection::vec(any_event(), 0..6).prop_map(Op::Difference),
            ]
        }

        proptest! {
            /// EventSet behaves exactly like a `BTreeSet<Event>` and
            /// iterates in wire-name order.
            #[test]
            fn behaves_like_a_btreeset(ops in prop::collection::vec(any_op(), 0..64)) {
                let mut set = EventSet::EMPTY;
                let mut model: BTreeSet<Event> = BTreeSet::new();
                for op in ops {
                    match op {
                        Op::Insert(e) => {
                            set.insert(e);
                            model.insert(e);
                        }
                        Op::Remove(e) => {
                            set.remove(e);
                            model.remove(&e);
                        }
                        Op::Union(es) => {
                            set = set.union(es.iter().copied().collect());
                            model.extend(es);
                        }
                        Op::Difference(es) => {
                            set = set.difference(es.iter().copied().collect());
                            for e in es {
                                model.remove(&e);
                            }
                        }
                    }
                    prop_assert_eq!(set.iter().collect::<Vec<_>>(),
                        model.iter().copied().collect::<Vec<_>>());
                    prop_assert_eq!(set.is_empty(), model.is_empty());
                    prop_assert_eq!(set.bits().count_ones() as usize, model.len());
                    prop_assert!(set.bits() < (1 << Event::COUNT));
                    for e in Event::ALL {
                        prop_assert_eq!(set.contains(e), model.contains(&e));
                    }
                    let names = set.names();
                    let mut sorted = names.clone();
                    sorted.sort_unstable();
                    prop_assert_eq!(&names, &sorted);
                    prop_assert_eq!(
                        names.iter().map(|n| Event::parse(n)).collect::<Vec<_>>(),
                        model.iter().map(|e| Some(*e)).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}
