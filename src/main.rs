fn main() {
    println!("ckpt");
}
