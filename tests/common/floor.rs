//! The bare-client floor for the benchmark: the same two Kafka hops as a payment, done by
//! the least code krafka allows, so kreply's numbers can be read against what the client
//! and the broker cost by themselves.
//!
//! The requester produces a record shaped like kreply's request (key, JSON envelope,
//! `kafka_correlationId` and `kafka_replyTopic`) and waits for the reply with that id on
//! its reply topic, read on every partition without a group. The responder reads the
//! request topic the same way and echoes each request to its reply topic
//! ([`super::echo::reply_to`]). Each producer and each consumer has a client, and so a
//! connection, of its own: a broker serves one request per connection at a time, so a
//! produce sharing a consumer's connection waits behind its long-poll fetch. Both sides
//! use kreply's producer settings (idempotent, acks=all, its linger and batch size) and
//! its fetch wait.
//!
//! Each side runs on a Tokio runtime whose threads carry its name, so the benchmark can
//! read each side's CPU time from `/proc/self/task` ([`super::cpu::own_threads_cpu`]).

use super::echo;
use krafka::consumer::Consumer;
use krafka::producer::{Acks, Producer};
use krafka::{ConsumerRecord, Kafka, Record};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The requester's thread name (15 bytes, what the kernel keeps).
pub const REQUESTER_THREADS: &str = "floor-requester";
/// The responder's thread name.
pub const RESPONDER_THREADS: &str = "floor-responder";

/// What the floor shares with kreply's config, and where it runs.
#[derive(Debug, Clone)]
pub struct FloorSettings {
    pub broker: String,
    pub request_topic: String,
    pub reply_topic: String,
    pub fetch_max_wait: Duration,
    pub batch_bytes: usize,
    pub linger: Duration,
}

/// A running requester and echo responder; both stop on drop.
pub struct Floor {
    pub requester: Arc<Requester>,
    /// Where the benchmark spawns its callers, so their work counts as the requester's.
    pub requester_runtime: Runtime,
    _responder_runtime: Runtime,
    loops: Vec<JoinHandle<()>>,
}

impl Floor {
    /// Connects both sides, positions both consumers at the end of their topics, and starts
    /// the reply and echo loops.
    pub fn start(settings: &FloorSettings) -> Floor {
        let requester_runtime = named_runtime(REQUESTER_THREADS);
        let responder_runtime = named_runtime(RESPONDER_THREADS);
        let (request_consumer, responder_producer) = responder_runtime.block_on(async {
            let topic = &settings.request_topic;
            let consumer = consumer(settings, "floor-responder-consumer", topic);
            let producer = producer(settings, "floor-responder-producer");
            (consumer.await, Arc::new(producer.await))
        });
        let echo_loop =
            responder_runtime.spawn(answer_requests(request_consumer, responder_producer));
        let (reply_consumer, requester_producer) = requester_runtime.block_on(async {
            let topic = &settings.reply_topic;
            let consumer = consumer(settings, "floor-requester-consumer", topic);
            let producer = producer(settings, "floor-requester-producer");
            (consumer.await, producer.await)
        });
        let requester = Arc::new(Requester {
            producer: requester_producer,
            waiting: Mutex::default(),
            request_topic: settings.request_topic.clone(),
            reply_topic: settings.reply_topic.clone(),
        });
        let reply_loop =
            requester_runtime.spawn(deliver_replies(reply_consumer, Arc::clone(&requester)));
        Floor {
            requester,
            requester_runtime,
            _responder_runtime: responder_runtime,
            loops: vec![echo_loop, reply_loop],
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        for one in &self.loops {
            one.abort();
        }
    }
}

/// Sends requests and hands each reply to its waiting caller, by correlation id.
pub struct Requester {
    producer: Producer,
    waiting: Mutex<HashMap<[u8; 16], oneshot::Sender<()>>>,
    request_topic: String,
    reply_topic: String,
}

impl Requester {
    /// One request-reply exchange for `order_id`: registered before it is produced (as
    /// kreply does, so a reply that beats the acknowledgement finds its waiter), then the
    /// acknowledgement and the reply awaited within `timeout`.
    pub async fn call(&self, order_id: &str, timeout: Duration) -> Result<(), String> {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let (replied, reply) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, replied);
        let envelope = serde_json::json!({
            "operation": "approve",
            "body": {"order_id": order_id, "amount": 1000, "currency": "KRW"},
        });
        let record = Record::new(self.request_topic.as_str(), envelope.to_string())
            .key(order_id.to_string())
            .header("kafka_correlationId", id.to_vec())
            .header("kafka_replyTopic", self.reply_topic.clone());
        let exchange = async {
            let _acknowledged = self
                .producer
                .send(record)
                .await
                .map_err(|e| format!("send failed: {e}"))?;
            reply.await.map_err(|_| "reply loop stopped".to_string())
        };
        let outcome = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err("no reply in time".to_string()));
        self.waiting.lock().unwrap().remove(&id);
        outcome
    }

    fn deliver(&self, reply: &ConsumerRecord) {
        let id = reply.header("kafka_correlationId").flatten();
        let Some(id) = id.and_then(|id| <[u8; 16]>::try_from(id.as_ref()).ok()) else {
            return;
        };
        if let Some(waiter) = self.waiting.lock().unwrap().remove(&id) {
            let _ = waiter.send(());
        }
    }
}

/// How long one poll may wait; a poll returns as soon as a fetch brings records.
const POLL: Duration = Duration::from_millis(100);

async fn deliver_replies(consumer: Consumer, requester: Arc<Requester>) {
    loop {
        match consumer.poll(POLL).await {
            Ok(replies) => replies.iter().for_each(|r| requester.deliver(r)),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Echoes every request; each send awaits its acknowledgement in a task of its own, so
/// the loop goes on polling meanwhile.
async fn answer_requests(consumer: Consumer, producer: Arc<Producer>) {
    loop {
        let requests = match consumer.poll(POLL).await {
            Ok(requests) => requests,
            Err(_) => {
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        for reply in requests.iter().filter_map(|r| echo::reply_to(r).ok()) {
            let producer = Arc::clone(&producer);
            tokio::spawn(async move {
                let _ = producer.send(reply).await;
            });
        }
    }
}

fn named_runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// A client (and so a connection) of its own, named `client_id`.
async fn client(settings: &FloorSettings, client_id: &str) -> Kafka {
    Kafka::builder(settings.broker.as_str())
        .client_id(client_id)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{client_id} cannot connect: {e}"))
}

async fn consumer(settings: &FloorSettings, client_id: &str, topic: &str) -> Consumer {
    let kafka = client(settings, client_id).await;
    echo::consumer_at_end(&kafka, topic, settings.fetch_max_wait)
        .await
        .unwrap_or_else(|e| panic!("{client_id} on {topic}: {e}"))
}

/// kreply's payment producer settings (see `ProducerSession`): idempotent, acks=all.
async fn producer(settings: &FloorSettings, client_id: &str) -> Producer {
    client(settings, client_id)
        .await
        .producer()
        .acks(Acks::All)
        .idempotent(true)
        .linger(settings.linger)
        .batch_size(settings.batch_bytes)
        .build()
        .await
        .unwrap_or_else(|e| panic!("{client_id}: {e}"))
}
