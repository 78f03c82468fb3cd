"""Produces sample JSON records to a Kafka topic for `make run` (confluent-kafka).

One record per batch (batch.num.messages=1): tansu 0.6 answers a fetch that starts inside a
multi-record batch with the next batch, which a real broker never does.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> None:
    bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        try:
            future.result(10)
        except Exception as e:  # an existing topic is fine
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1, "linger.ms": 0})
    for n in range(count):
        value = {"order_id": n, "amount_cents": 100 + n, "currency": "EUR"}
        if n == count // 2:
            value = None  # a poison record: not JSON
        producer.produce(
            topic,
            key=f"customer-{n % 7}",
            value=json.dumps(value) if value is not None else b"\xff not json",
            partition=n % partitions,
            headers=[("source", b"make-run")],
        )
    producer.flush(30)
    print(f"produced {count} records to {topic} ({partitions} partitions) on {bootstrap}")


if __name__ == "__main__":
    main()
