package vmm

import (
	"context"
	"testing"
	"time"
)

func TestSerialBufferWaitFor(t *testing.T) {
	var s SerialBuffer
	go func() {
		for _, chunk := range []string{"kvmm ", "self-", "test\n", "PASS"} {
			time.Sleep(time.Millisecond)
			s.Write([]byte(chunk))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitFor(ctx, "self-test\nPASS"); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if err := s.WaitFor(short, "never"); err == nil {
		t.Fatal("WaitFor returned for output that never came")
	}
	if s.String() != "kvmm self-test\nPASS" {
		t.Fatalf("String() = %q", s.String())
	}
}
