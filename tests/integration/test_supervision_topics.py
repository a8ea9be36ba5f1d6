"""The topic keeper after an in-memory broker restart, when a producer writes to the new broker
before the topics exist there (records it buffered during the outage): Tansu acknowledges them,
and the topic created afterwards under that name is broken (an end offset no fetch reaches, a
first write that fails). The keeper re-creates such a topic, so that what is written after it is
stored at offset 0 on and read back."""
import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.protocol import metadata
from llmops.common.broker import EmbeddedBroker
from llmops.common.kafka import refuse_topic_auto_creation
from llmops.common.topics import TopicKeeper, ensure_topics

from tests.support import free_port, make_settings


def test_a_topic_written_before_the_keeper_created_it_is_created_again_and_works(tmp_path, caplog):
    init = metadata.MetadataRequest.__init__
    refuse_topic_auto_creation()   # as in a service process: only the keeper creates topics

    async def main() -> tuple[list, list[bytes]]:
        broker = EmbeddedBroker(free_port())
        await broker.start()
        s = make_settings(tmp_path, broker.bootstrap, topic_partitions=2)
        keeper = TopicKeeper(s)
        topic = s.topic("completions")
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all")
        try:
            await ensure_topics(s)
            await keeper.check()
            await producer.start()
            await producer.send_and_wait(topic, b"before", key=b"k")
            broker.proc.kill()
            broker.proc.wait()
            buffered = [await producer.send(topic, b"during the outage %d" % i, key=b"k%d" % i) for i in range(50)]
            await broker.start()   # the same port, empty: the producer drains its buffer to it at once
            await asyncio.gather(*buffered, return_exceptions=True)
            await keeper._close()
            with caplog.at_level(logging.WARNING, logger="llmops.common.topics"):
                await keeper.check()
            assert keeper.resets == 1
            sent = await asyncio.gather(*[await producer.send(topic, b"after %d" % i, key=b"a%d" % i)
                                          for i in range(10)])
            got: list[bytes] = []
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in (0, 1)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                for _ in range(20):
                    for msgs in (await consumer.getmany(timeout_ms=300)).values():
                        got += [m.value for m in msgs]
                    if len(got) >= 10:
                        break
            finally:
                await consumer.stop()
            return sent, got
        finally:
            await producer.stop()
            await keeper.stop()
            broker.stop()

    try:
        sent, got = asyncio.run(main())
    finally:
        metadata.MetadataRequest.__init__ = init
    assert any("were written before they were created" in r.message for r in caplog.records), caplog.text
    assert sorted(got) == sorted(b"after %d" % i for i in range(10))   # all of them, and nothing of the old log
    assert sorted(m.offset for m in sent if m.partition == 0) == list(range(sum(m.partition == 0 for m in sent)))
