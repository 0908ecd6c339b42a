"""streamapp's tests."""

#: the workers' HMAC key in every test (STREAMAPP_SIGNING_KEY): a test value, never a real one
TEST_SIGNING_KEY = "test-signing-key-0123456789abcdefghijklmnop"
