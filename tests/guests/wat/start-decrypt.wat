;; A guest whose instantiation (a second core module's start function) asks kms for a secret: a trap (GuestTrap),
;; since secrets are handed out only while the guest handles an invocation.
(component
  (core module $main (;0;)
    (type (;0;) (func (param i32 i32 i32 i32) (result i32)))
    (type (;1;) (func (param i32 i32 i32 i32 i32 i32 i64) (result i32)))
    (memory (;0;) 1)
    (global $heap (;0;) (mut i32) i32.const 1024)
    (export "memory" (memory 0))
    (export "cabi_realloc" (func 0))
    (export "keyward:lambda/handler@0.1.0#handle" (func 1))
    (func (;0;) (type 0) (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      global.get $heap
      local.set $p
      global.get $heap
      local.get 3
      i32.const 7
      i32.add
      i32.const -8
      i32.and
      i32.add
      global.set $heap
      local.get $p
    )
    (func (;1;) (type 1) (param i32 i32 i32 i32 i32 i32 i64) (result i32)
      i32.const 64
      i32.const 0
      i32.store8
      i32.const 68
      i32.const 80
      i32.store
      i32.const 72
      i32.const 2
      i32.store
      i32.const 64
    )
    (data (;0;) (i32.const 80) "{}")
    (@producers
      (processed-by "wit-component" "0.259.0")
    )
  )
  (type (;0;) (record (field "request-id" string) (field "function-arn" string) (field "deadline-ms" u64)))
  (core instance $main (;0;) (instantiate $main))
  (alias core export $main "memory" (core memory $memory (;0;)))
  (type (;1;) (result string (error string)))
  (type (;2;) (func (param "event" string) (param "ctx" 0) (result 1)))
  (import "keyward:lambda/kms@0.1.0" (instance $kms
    (type $err (variant (case "denied" string) (case "invalid-ciphertext" string) (case "unavailable" string)))
    (export "error" (type $e (eq $err)))
    (type $f (func (param "ciphertext" (list u8)) (param "encryption-context" (list (tuple string string))) (result (result (list u8) (error $e)))))
    (export "decrypt" (func (type $f)))
  ))
  (alias core export $main "cabi_realloc" (core func $realloc))
  (alias export $kms "decrypt" (func $decrypt))
  (core func $decrypt_lowered (canon lower (func $decrypt) (memory $memory) (realloc $realloc)))
  (core module $late
    (import "kms" "decrypt" (func $d (param i32 i32 i32 i32 i32)))
    (import "main" "memory" (memory 1))
    (func $st i32.const 8192 i32.const 16 i32.const 0 i32.const 0 i32.const 16384 call $d)
    (start $st)
    (data (i32.const 8192) "\6e\6f\74\20\61\20\63\69\70\68\65\72\74\65\78\74")
  )
  (core instance $late (instantiate $late
    (with "kms" (instance (export "decrypt" (func $decrypt_lowered))))
    (with "main" (instance (export "memory" (memory $memory))))))
  (alias core export $main "keyward:lambda/handler@0.1.0#handle" (core func $keyward:lambda/handler@0.1.0#handle (;0;)))
  (alias core export $main "cabi_realloc" (core func $cabi_realloc (;1;)))
  (func $handle (;0;) (type 2) (canon lift (core func $keyward:lambda/handler@0.1.0#handle) (memory $memory) (realloc $cabi_realloc) string-encoding=utf8))
  (component $keyward:lambda/handler@0.1.0-shim-component (;0;)
    (type (;0;) (record (field "request-id" string) (field "function-arn" string) (field "deadline-ms" u64)))
    (import "import-type-context" (type (;1;) (eq 0)))
    (type (;2;) (result string (error string)))
    (type (;3;) (func (param "event" string) (param "ctx" 1) (result 2)))
    (import "import-func-handle" (func (;0;) (type 3)))
    (type (;4;) (record (field "request-id" string) (field "function-arn" string) (field "deadline-ms" u64)))
    (export (;5;) "context" (type 4))
    (type (;6;) (result string (error string)))
    (type (;7;) (func (param "event" string) (param "ctx" 5) (result 6)))
    (export (;1;) "handle" (func 0) (func (type 7)))
  )
  (instance $keyward:lambda/handler@0.1.0-shim-instance (;0;) (instantiate $keyward:lambda/handler@0.1.0-shim-component
      (with "import-func-handle" (func $handle))
      (with "import-type-context" (type 0))
    )
  )
  (export $keyward:lambda/handler@0.1.0 (;1;) "keyward:lambda/handler@0.1.0" (instance $keyward:lambda/handler@0.1.0-shim-instance))
  (@producers
    (processed-by "wit-component" "0.259.0")
  )
)

