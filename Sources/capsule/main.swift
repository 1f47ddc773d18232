print("capsule")
