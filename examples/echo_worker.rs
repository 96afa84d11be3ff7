//! A development stand-in for a payment worker: approves every request on the request
//! topic by echoing it, Spring-style. For the local stack only; never point it at a real
//! cluster, where it would answer real payments.
//!
//!     cargo run --example echo_worker -- 127.0.0.1:9092 payment_request

#[path = "../tests/common/echo.rs"]
mod echo;

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> krafka::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "payment_request".into());
    let kafka = krafka::Kafka::builder(brokers.as_str())
        .client_id("kreply-echo-worker")
        .connect()
        .await?;
    let consumer = echo::request_consumer(&kafka, &topic).await?;
    let producer = kafka.producer().build().await?;
    eprintln!("echo worker: answering every request on {topic} at {brokers}");
    loop {
        for request in consumer.poll(Duration::from_millis(200)).await? {
            match echo::reply_to(&request) {
                Ok(reply) => drop(producer.send(reply).await?),
                Err(why) => eprintln!(
                    "echo worker: skipped {}/{}@{}: {why}",
                    request.topic, request.partition, request.offset
                ),
            }
        }
    }
}
