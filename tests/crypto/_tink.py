"""Google's `tink` package set up with a given DEK, for interop tests."""

from __future__ import annotations

import io

import tink
from tink import cleartext_keyset_handle, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

streaming_aead.register()

_TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"


def tink_streaming_aead(dek: bytes) -> streaming_aead.StreamingAead:
    """AES256_GCM_HKDF_1MB with key_value = dek: 1 MiB segments, HKDF-SHA256, 32-byte key."""
    params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=1 << 20,
        derived_key_size=32,
        hkdf_hash_type=common_pb2.SHA256,
    )
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(version=0, params=params, key_value=dek)
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url=_TYPE_URL,
                    value=key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle: tink.KeysetHandle = cleartext_keyset_handle.from_keyset(keyset)
    return handle.primitive(streaming_aead.StreamingAead)


class _Keep(io.BytesIO):
    """BytesIO that keeps its bytes after Tink closes it."""

    value = b""

    def close(self) -> None:
        self.value = self.getvalue()
        super().close()


def tink_encrypt(dek: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    dst = _Keep()
    with tink_streaming_aead(dek).new_encrypting_stream(dst, associated_data) as stream:
        stream.write(plaintext)
    return dst.value if dst.closed else dst.getvalue()


def tink_decrypt(dek: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    primitive = tink_streaming_aead(dek)
    with primitive.new_decrypting_stream(io.BytesIO(ciphertext), associated_data) as stream:
        return stream.read()
