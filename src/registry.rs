//! The correlation registry: where a waiting HTTP request and its Kafka reply meet.
//!
//! The HTTP side registers a correlation id *before* it produces the request, so a reply
//! that comes back faster than the produce acknowledgement still finds its waiter. The
//! reply consumer, on another runtime and thread, delivers each reply by its id bytes.
//!
//! It is runtime-free on purpose: a `std` mutex around a map of one-shot slots, each
//! waking whatever executor polled it. Either side can be swapped or tested alone.
//!
//! A [`ReplyWaiter`] removes its entry when dropped, so a request that times out or whose
//! client goes away leaves nothing behind; a reply that arrives after that finds no waiter
//! and is handed back to the caller of [`Registry::deliver`] ([`Delivery::NoWaiter`]), which
//! is where keeping late replies will slot in. An in-flight cap will slot into
//! [`Registry::register`].

use crate::correlation_id::CorrelationId;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A reply record, as the reply consumer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub partition: i32,
    pub offset: i64,
}

/// What became of a delivered reply.
#[derive(Debug)]
pub enum Delivery {
    /// A request was waiting and now has it.
    Delivered,
    /// Nobody waits for this id (timed out, duplicate, or another host's): the reply is
    /// given back so the caller can log or keep it.
    NoWaiter(Reply),
}

/// The id was already registered; with random 128-bit ids this means a bug, not bad luck.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyWaiting;

/// Shared between the HTTP side and the reply consumer; clones share one registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    waiting: Mutex<HashMap<CorrelationId, Arc<Slot>>>,
    unmatched: AtomicU64,
}

/// One reply's hand-over point between the two runtimes.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    reply: Option<Reply>,
    waker: Option<Waker>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Starts waiting for the reply to `id`.
    pub fn register(&self, id: CorrelationId) -> Result<ReplyWaiter, AlreadyWaiting> {
        let slot = Arc::new(Slot::default());
        let mut waiting = lock(&self.inner.waiting);
        if waiting.contains_key(&id) {
            return Err(AlreadyWaiting);
        }
        waiting.insert(id.clone(), Arc::clone(&slot));
        Ok(ReplyWaiter {
            inner: Arc::clone(&self.inner),
            id,
            slot,
        })
    }

    /// Hands a reply to the request waiting for `id`, compared byte for byte.
    pub fn deliver(&self, id: &[u8], reply: Reply) -> Delivery {
        let slot = lock(&self.inner.waiting).remove(id);
        let Some(slot) = slot else {
            self.inner.unmatched.fetch_add(1, Ordering::Relaxed);
            return Delivery::NoWaiter(reply);
        };
        let waker = {
            let mut state = lock(&slot.state);
            state.reply = Some(reply);
            state.waker.take()
        };
        // Woken outside the lock: the waiter's executor may poll it at once.
        if let Some(waker) = waker {
            waker.wake();
        }
        Delivery::Delivered
    }

    /// How many requests wait for a reply right now.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.waiting).len()
    }

    /// How many replies found no waiter since startup.
    pub fn unmatched(&self) -> u64 {
        self.inner.unmatched.load(Ordering::Relaxed)
    }
}

/// A future that resolves to the reply for one correlation id.
pub struct ReplyWaiter {
    inner: Arc<Inner>,
    id: CorrelationId,
    slot: Arc<Slot>,
}

impl ReplyWaiter {
    pub fn id(&self) -> &CorrelationId {
        &self.id
    }

    /// The reply if it has already been delivered. A caller whose timer fired asks this
    /// before giving up, so a reply delivered in the same instant is not thrown away.
    pub fn take_delivered(&self) -> Option<Reply> {
        lock(&self.slot.state).reply.take()
    }
}

impl Future for ReplyWaiter {
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut state = lock(&self.slot.state);
        match state.reply.take() {
            Some(reply) => Poll::Ready(reply),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for ReplyWaiter {
    fn drop(&mut self) {
        let mut waiting = lock(&self.inner.waiting);
        // Only our own entry: after a delivery the id is gone already.
        if waiting
            .get(&self.id)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            waiting.remove(&self.id);
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; the map
/// and slots stay consistent, so keep serving rather than take every request down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    fn reply(value: &str) -> Reply {
        Reply {
            value: Some(value.as_bytes().to_vec()),
            headers: vec![],
            partition: 0,
            offset: 7,
        }
    }

    /// A waker that counts its wake-ups, so tests need no executor.
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(waiter: &mut ReplyWaiter, waker: &Arc<CountingWaker>) -> Poll<Reply> {
        let waker = Waker::from(Arc::clone(waker));
        Pin::new(waiter).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_reply_delivered_after_the_first_poll_wakes_and_resolves_the_waiter() {
        let registry = Registry::new();
        let id = CorrelationId::new_spring();
        let mut waiter = registry.register(id.clone()).unwrap();
        let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
        assert!(poll_once(&mut waiter, &waker).is_pending());
        assert!(matches!(
            registry.deliver(id.as_bytes(), reply("ok")),
            Delivery::Delivered
        ));
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut waiter, &waker), Poll::Ready(reply("ok")));
        assert_eq!(registry.in_flight(), 0);
    }

    #[test]
    fn a_reply_faster_than_the_first_poll_is_kept_for_the_waiter() {
        let registry = Registry::new();
        let id = CorrelationId::new_spring();
        let waiter = registry.register(id.clone()).unwrap();
        registry.deliver(id.as_bytes(), reply("early"));
        assert_eq!(waiter.take_delivered(), Some(reply("early")));
    }

    #[test]
    fn replies_are_matched_by_exact_bytes() {
        let registry = Registry::new();
        let id = CorrelationId::from_wire(&[1, 2, 3]);
        let waiter = registry.register(id).unwrap();
        assert!(matches!(
            registry.deliver(&[1, 2], reply("x")),
            Delivery::NoWaiter(_)
        ));
        assert!(matches!(
            registry.deliver(&[1, 2, 3, 0], reply("x")),
            Delivery::NoWaiter(_)
        ));
        assert_eq!(waiter.take_delivered(), None);
        assert_eq!(registry.unmatched(), 2);
    }

    #[test]
    fn a_dropped_waiter_leaves_nothing_and_its_late_reply_is_handed_back() {
        let registry = Registry::new();
        let id = CorrelationId::new_spring();
        drop(registry.register(id.clone()).unwrap());
        assert_eq!(registry.in_flight(), 0);
        match registry.deliver(id.as_bytes(), reply("late")) {
            Delivery::NoWaiter(r) => assert_eq!(r, reply("late")),
            Delivery::Delivered => panic!("nobody was waiting"),
        }
        assert_eq!(registry.unmatched(), 1);
    }

    #[test]
    fn a_second_reply_for_the_same_id_finds_no_waiter() {
        let registry = Registry::new();
        let id = CorrelationId::new_spring();
        let _waiter = registry.register(id.clone()).unwrap();
        assert!(matches!(
            registry.deliver(id.as_bytes(), reply("1")),
            Delivery::Delivered
        ));
        assert!(matches!(
            registry.deliver(id.as_bytes(), reply("2")),
            Delivery::NoWaiter(_)
        ));
    }

    #[test]
    fn the_same_id_cannot_wait_twice() {
        let registry = Registry::new();
        let id = CorrelationId::new_spring();
        let _waiter = registry.register(id.clone()).unwrap();
        assert_eq!(registry.register(id).err(), Some(AlreadyWaiting));
    }

    #[test]
    fn many_threads_deliver_to_many_waiters_without_loss() {
        let registry = Registry::new();
        let ids: Vec<_> = (0..1000).map(|_| CorrelationId::new_spring()).collect();
        let waiters: Vec<_> = ids
            .iter()
            .map(|id| registry.register(id.clone()).unwrap())
            .collect();
        std::thread::scope(|s| {
            for chunk in ids.chunks(250) {
                let registry = registry.clone();
                s.spawn(move || {
                    for id in chunk {
                        registry.deliver(id.as_bytes(), reply(&id.to_string()));
                    }
                });
            }
        });
        for (id, waiter) in ids.iter().zip(&waiters) {
            assert_eq!(waiter.take_delivered(), Some(reply(&id.to_string())));
        }
        assert_eq!(registry.in_flight(), 0);
        assert_eq!(registry.unmatched(), 0);
    }
}
